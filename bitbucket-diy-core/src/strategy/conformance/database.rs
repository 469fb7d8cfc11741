//! Conformance checks for database strategies (TODO(helper)).
