//! TLS backends and clients for the lab tests (`tls_standalone.rs`, `kubernetes.rs`): the
//! helpers of `blixt_lab::tls`, with a backend that fails the test when it cannot start.
#![allow(dead_code)] // each test binary uses its own subset

#[allow(unused_imports)] // as above
pub use blixt_lab::tls::{connect, expect_reset, ping, CertificateDer, Tls};

use blixt_lab::topology::Lab;

/// [`blixt_lab::tls::TlsBackend`] of backend `i`, started or the test fails with why.
#[derive(Debug)]
pub struct TlsBackend(blixt_lab::tls::TlsBackend);

impl TlsBackend {
    pub fn start(lab: &Lab, i: usize) -> TlsBackend {
        TlsBackend(
            blixt_lab::tls::TlsBackend::start(lab, i)
                .unwrap_or_else(|e| panic!("TLS backend be{i}: {e:#}")),
        )
    }
}

impl std::ops::Deref for TlsBackend {
    type Target = blixt_lab::tls::TlsBackend;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}
