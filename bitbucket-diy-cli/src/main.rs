//! The `bitbucket-diy` command (TODO: CLI issue).

fn main() {}
