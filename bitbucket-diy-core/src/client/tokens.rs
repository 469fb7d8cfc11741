//! Unlock and cancel tokens: secrets that never show in `Debug`, `Display` or logs.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

macro_rules! token_type {
    ($name:ident, $doc:literal) => {
        #[doc = $doc]
        #[derive(Clone)]
        pub struct $name(SecretString);

        impl $name {
            /// Wrap a token received from Bitbucket or typed by a human.
            pub fn new(token: impl Into<String>) -> Self {
                Self(SecretString::from(token.into()))
            }

            /// The token itself: only for sending it to Bitbucket or printing a recovery command.
            pub fn expose_secret(&self) -> &str {
                self.0.expose_secret()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "([REDACTED])"))
            }
        }

        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                self.expose_secret() == other.expose_secret()
            }
        }
    };
}

token_type!(
    UnlockToken,
    "The token `POST /mvc/maintenance/lock` returns: it unlocks the instance and authorises progress reports."
);
token_type!(
    CancelToken,
    "The token `POST /mvc/admin/backups?external=true` returns: it cancels the server-side backup task."
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_token() {
        let t = UnlockToken::new("7187ae1824ce1ede38a8e7de4bccf58d9a8e1a7a");
        assert_eq!(format!("{t:?}"), "UnlockToken([REDACTED])");
        let c = CancelToken::new("82c73f89e790b27fef3032e81c7071388ae4e371");
        assert!(!format!("{c:?}").contains("82c73f"));
    }
}
