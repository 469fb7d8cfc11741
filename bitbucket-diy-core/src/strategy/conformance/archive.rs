//! Conformance checks for archive strategies (TODO(helper)).
