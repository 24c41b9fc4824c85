//! Builders shared by the unit tests: crafted ClientHellos and record framing.

use std::process::Command;

/// A ClientHello built field by field, for hellos no real client sends.
#[derive(Debug, Clone)]
pub(crate) struct Hello {
    pub version: u16,
    pub session_id: Vec<u8>,
    pub suites: Vec<u16>,
    pub compression: Vec<u8>,
    /// `None`: no extensions block at all (allowed before TLS 1.3).
    pub extensions: Option<Vec<(u16, Vec<u8>)>>,
}

impl Default for Hello {
    fn default() -> Self {
        Hello {
            version: 0x0303,
            session_id: vec![0x5a; 32],
            suites: vec![0x1301, 0x1302, 0xc02f],
            compression: vec![0],
            extensions: Some(Vec::new()),
        }
    }
}

impl Hello {
    pub fn with_sni(name: &str) -> Self {
        let mut h = Hello::default();
        h.extensions
            .as_mut()
            .expect("extensions")
            .push((0, Self::sni_ext_raw(&[(0, name.as_bytes())])));
        h
    }

    /// A `server_name` extension body with the given (name_type, name) entries.
    pub fn sni_ext_raw(entries: &[(u8, &[u8])]) -> Vec<u8> {
        let mut list = Vec::new();
        for (ty, name) in entries {
            list.push(*ty);
            list.extend_from_slice(&(name.len() as u16).to_be_bytes());
            list.extend_from_slice(name);
        }
        let mut out = (list.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(&list);
        out
    }

    /// The handshake message: type, 24-bit length, body.
    pub fn handshake(&self) -> Vec<u8> {
        let mut b = self.version.to_be_bytes().to_vec();
        b.extend_from_slice(&[0x11; 32]);
        b.push(self.session_id.len() as u8);
        b.extend_from_slice(&self.session_id);
        b.extend_from_slice(&((self.suites.len() * 2) as u16).to_be_bytes());
        for s in &self.suites {
            b.extend_from_slice(&s.to_be_bytes());
        }
        b.push(self.compression.len() as u8);
        b.extend_from_slice(&self.compression);
        if let Some(exts) = &self.extensions {
            let mut e = Vec::new();
            for (ty, data) in exts {
                e.extend_from_slice(&ty.to_be_bytes());
                e.extend_from_slice(&(data.len() as u16).to_be_bytes());
                e.extend_from_slice(data);
            }
            b.extend_from_slice(&(e.len() as u16).to_be_bytes());
            b.extend_from_slice(&e);
        }
        let mut hs = vec![1];
        hs.extend_from_slice(&(b.len() as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(&b);
        hs
    }

    /// The handshake message in records of at most `frag` bytes.
    pub fn flight(&self, frag: usize) -> Vec<u8> {
        records(&self.handshake(), frag)
    }
}

/// Frames handshake bytes into TLS records (content type 22, version 0x0301) of `frag` bytes.
pub(crate) fn records(hs: &[u8], frag: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in hs.chunks(frag.max(1)) {
        out.extend_from_slice(&[22, 3, 1]);
        out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

/// Path of a working `openssl` binary, installing Debian's package when it is missing and we
/// are root.
///
/// # Panics
/// When openssl is missing and cannot be installed.
pub(crate) fn ensure_openssl() -> &'static str {
    let works = || {
        Command::new("openssl")
            .arg("version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    if !works() {
        let install = || {
            Command::new("apt-get")
                .args(["install", "-y", "-q", "openssl"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .is_ok_and(|s| s.success())
        };
        // A fresh machine may have no package lists yet.
        let installed = install()
            || (Command::new("apt-get")
                .args(["update", "-q"])
                .status()
                .is_ok_and(|s| s.success())
                && install());
        assert!(
            installed && works(),
            "openssl is missing and `apt-get install -y openssl` failed: install Debian's openssl package (needs root)"
        );
    }
    "openssl"
}
