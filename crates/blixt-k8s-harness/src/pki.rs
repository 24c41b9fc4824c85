//! The cluster's throwaway PKI, generated at every start: one CA, the API server's serving
//! certificate, client certificates for the admin user, the controller manager, the scheduler and
//! kube-proxy, and the service-account signing key pair. ECDSA P-256 everywhere (fast to generate; the API server
//! accepts ES256 service-account keys).

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// Files of the PKI, all PEM.
#[derive(Debug, Clone)]
pub(crate) struct Pki {
    pub(crate) ca_cert: PathBuf,
    pub(crate) ca_pem: String,
    pub(crate) serving_cert: PathBuf,
    pub(crate) serving_key: PathBuf,
    pub(crate) admin: ClientCert,
    pub(crate) controller_manager: ClientCert,
    pub(crate) scheduler: ClientCert,
    pub(crate) kube_proxy: ClientCert,
    pub(crate) sa_private_key: PathBuf,
    pub(crate) sa_public_key: PathBuf,
}

#[derive(Debug, Clone)]
pub(crate) struct ClientCert {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

/// The DNS names and addresses the serving certificate is valid for: loopback, `extra_ips` (where
/// the server listens when pods run) and the in-cluster names of the `kubernetes` Service, so a
/// client configured the in-cluster way verifies it too.
fn serving_names(service_ip: Ipv4Addr, extra_ips: &[IpAddr]) -> Vec<SanType> {
    let mut names = vec![
        SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        SanType::IpAddress(IpAddr::V4(service_ip)),
    ];
    names.extend(extra_ips.iter().copied().map(SanType::IpAddress));
    for dns in [
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ] {
        names.push(SanType::DnsName(
            dns.try_into().expect("static DNS names are valid"),
        ));
    }
    names
}

fn name(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    if let Some(org) = organization {
        dn.push(DnType::OrganizationName, org);
    }
    dn
}

fn write(dir: &Path, file: &str, contents: &str) -> Result<PathBuf> {
    let path = dir.join(file);
    std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

impl Pki {
    /// Generates everything into `dir`. `service_ip` is the first address of the Service range
    /// (what the API server gives the `kubernetes` Service); the serving certificate is also
    /// valid for `extra_ips`.
    pub(crate) fn generate(dir: &Path, service_ip: Ipv4Addr, extra_ips: &[IpAddr]) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;

        let ca_key = KeyPair::generate().context("generating the CA key")?;
        let mut ca_params = CertificateParams::default();
        ca_params.distinguished_name = name("blixt-test-ca", None);
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params
            .self_signed(&ca_key)
            .context("self-signing the CA")?;
        let ca_pem = ca_cert.pem();
        let issuer = Issuer::new(ca_params, ca_key);

        let leaf = |file: &str,
                    dn: DistinguishedName,
                    sans: Vec<SanType>,
                    usage: ExtendedKeyUsagePurpose|
         -> Result<ClientCert> {
            let key = KeyPair::generate().with_context(|| format!("generating {file} key"))?;
            let mut params = CertificateParams::default();
            params.distinguished_name = dn;
            params.subject_alt_names = sans;
            params.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            params.extended_key_usages = vec![usage];
            params.use_authority_key_identifier_extension = true;
            let cert = params
                .signed_by(&key, &issuer)
                .with_context(|| format!("signing {file} certificate"))?;
            Ok(ClientCert {
                cert: write(dir, &format!("{file}.crt"), &cert.pem())?,
                key: write(dir, &format!("{file}.key"), &key.serialize_pem())?,
            })
        };

        let serving = leaf(
            "apiserver",
            name("kube-apiserver", None),
            serving_names(service_ip, extra_ips),
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        // O=system:masters is bound to cluster-admin by the bootstrap RBAC policy.
        let admin = leaf(
            "admin",
            name("blixt-test-admin", Some("system:masters")),
            Vec::new(),
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        // The user the bootstrap policy binds to system:kube-controller-manager; with
        // --use-service-account-credentials each controller then acts as its own service account.
        let controller_manager = leaf(
            "controller-manager",
            name("system:kube-controller-manager", None),
            Vec::new(),
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;

        // Bound to system:kube-scheduler (and system:volume-scheduler) by the bootstrap policy.
        let scheduler = leaf(
            "scheduler",
            name("system:kube-scheduler", None),
            Vec::new(),
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;

        // Bound to system:node-proxier by the bootstrap policy.
        let kube_proxy = leaf(
            "kube-proxy",
            name("system:kube-proxy", None),
            Vec::new(),
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;

        let sa_key = KeyPair::generate().context("generating the service-account key")?;
        Ok(Self {
            ca_cert: write(dir, "ca.crt", &ca_pem)?,
            ca_pem,
            serving_cert: serving.cert,
            serving_key: serving.key,
            admin,
            controller_manager,
            scheduler,
            kube_proxy,
            sa_private_key: write(dir, "sa.key", &sa_key.serialize_pem())?,
            sa_public_key: write(dir, "sa.pub", &sa_key.public_key_pem())?,
        })
    }
}
