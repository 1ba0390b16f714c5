//! Placeholder: the clients tests are being written.
