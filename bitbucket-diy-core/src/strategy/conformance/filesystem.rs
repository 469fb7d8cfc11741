//! Conformance checks for filesystem strategies (TODO(helper)).
