//! Generates a Bitbucket-shaped home of real git repositories (TODO(helper)).
