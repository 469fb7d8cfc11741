//! Python bindings (TODO: Python issue).
