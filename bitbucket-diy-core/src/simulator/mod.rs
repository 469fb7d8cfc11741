//! A stateful simulator of Bitbucket's maintenance API (TODO(helper)).
