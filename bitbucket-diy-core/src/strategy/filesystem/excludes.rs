//! What is left out of a home copy (TODO(helper): implement matching).

/// The exclude rules of one home copy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Excludes {
    patterns: Vec<String>,
}
