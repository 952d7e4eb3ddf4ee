//! Edge TLS: certificates from Secrets (or folders laid out like mounted Secrets), chosen
//! by the name a client asks for, with an optional client certificate check per host.
//!
//! [`build`] turns the certificate references of the Routes that serve into a
//! [`TlsTable`], which the snapshot carries; the TLS listener asks it for a [`Profile`]
//! on every handshake. A profile's `id` names where its certificate comes from, not its
//! bytes: a renewed certificate keeps the id, so requests on connections opened before
//! the renewal still pass the misdirection check. A client CA counts by its contents, so
//! replacing one ends what the old one verified.

mod load;
mod upstream;

use crate::{
    compile::{Problem, Reason},
    config::{ClientCertificateMode, ObjectKey, Resource, Resources, RouteSpec},
};
pub use load::{Certificate, ClientCa};
use rustls::ServerConfig;
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    hash::{Hash, Hasher},
    sync::Arc,
};
pub use upstream::{UpstreamTls, UpstreamTlsError};

/// Which certificate and client check each host gets. Never changed once built.
#[derive(Debug, Default)]
pub struct TlsTable {
    exact: HashMap<String, Arc<Profile>>,
    /// By the suffix after `*.`; a wildcard covers exactly one more label, as in
    /// certificates.
    wildcard: HashMap<String, Arc<Profile>>,
    default: Option<Arc<Profile>>,
    /// Hosts of Routes that require a client certificate, exact and (by suffix) wildcard;
    /// kept even when the CA does not load, so the requirement never lapses.
    require_exact: HashSet<String>,
    require_wildcard: HashSet<String>,
    /// Why the default certificate is not served, when it is set and fails to load.
    pub default_problem: Option<String>,
    /// Every certificate and CA that loaded, by Secret, for the next build to reuse.
    certs: BTreeMap<ObjectKey, Arc<Certificate>>,
    cas: BTreeMap<ObjectKey, Arc<ClientCa>>,
    profiles: HashMap<ProfileKey, Arc<Profile>>,
}

/// Where a profile's parts come from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ProfileKey {
    cert: ObjectKey,
    client: Option<(ObjectKey, ClientCertificateMode)>,
}

/// A server configuration for one certificate and client check.
#[derive(Debug)]
pub struct Profile {
    /// Stable across renewals of the same Secrets; see the module documentation.
    pub id: u64,
    pub config: Arc<ServerConfig>,
    pub cert: Arc<Certificate>,
    client_ca: Option<Arc<ClientCa>>,
}

// === impl TlsTable ===

impl TlsTable {
    /// The profile for a handshake that asked for `sni` (already lower-case): the
    /// host's own, else the default certificate when the client named no host or the
    /// default certificate covers the name. `None` refuses the handshake: a certificate
    /// for another name is never served.
    pub fn resolve(&self, sni: Option<&str>) -> Option<&Arc<Profile>> {
        let Some(name) = sni else {
            return self.default.as_ref();
        };
        self.own(name)
            .or_else(|| self.default.as_ref().filter(|d| d.cert.covers(name)))
    }

    /// True when `host` has a certificate and client check of its own, or falls to the
    /// default certificate, and that profile is not `profile`: the request belongs on
    /// another connection. Hosts that resolve to nothing may use any connection.
    pub fn misdirected(&self, host: &str, profile: u64) -> bool {
        match self.own(host) {
            Some(p) => p.id != profile,
            // Only a connection of another profile needs the default's names checked,
            // which keeps certificate parsing off the common path.
            None => self
                .default
                .as_ref()
                .is_some_and(|d| d.id != profile && d.cert.covers(host)),
        }
    }

    /// The profile of an exact host, else of the wildcard one label up.
    fn own(&self, name: &str) -> Option<&Arc<Profile>> {
        self.exact.get(name).or_else(|| {
            name.split_once('.')
                .and_then(|(_, parent)| self.wildcard.get(parent))
        })
    }

    /// True when a client certificate checked on a connection of `profile` was checked
    /// against the very CA that `host` checks its own clients with: only then does it
    /// vouch for a caller of `host`, as for a call an aggregate makes on its behalf.
    pub fn client_ca_matches(&self, host: &str, profile: u64) -> bool {
        let ca_of = |p: &Profile| p.client_ca.as_ref().map(|ca| ca.source.clone());
        let wanted = self.own(host).and_then(|p| ca_of(p));
        let shown = self
            .exact
            .values()
            .chain(self.wildcard.values())
            .chain(&self.default)
            .find(|p| p.id == profile)
            .and_then(|p| ca_of(p));
        matches!((wanted, shown), (Some(w), Some(s)) if w == s)
    }

    /// True when any Route of `host` (lower-case, no port) requires a client certificate:
    /// then every request for it needs one, whichever Route answers it. A wildcard covers
    /// any depth, as in routing.
    pub fn requires_client_cert(&self, host: &str) -> bool {
        if self.require_exact.contains(host) {
            return true;
        }
        let mut rest = host;
        while let Some((_, parent)) = rest.split_once('.') {
            if self.require_wildcard.contains(parent) {
                return true;
            }
            rest = parent;
        }
        false
    }

    /// Every certificate in use, for metrics.
    pub fn certificates(&self) -> impl Iterator<Item = &Arc<Certificate>> {
        self.certs.values()
    }
}

/// The certificate profiles of `routes` (the Routes that serve, oldest first), reusing
/// what `previous` already parsed. Problems are added to `problems`; none of them keeps
/// a Route from serving plain HTTP, and a host whose certificate fails gets no TLS at
/// all rather than the wrong certificate.
pub fn build<'r>(
    resources: &Resources,
    routes: impl IntoIterator<Item = &'r Resource<RouteSpec>>,
    previous: Option<&TlsTable>,
    problems: &mut Vec<Problem>,
) -> TlsTable {
    let mut b = Builder {
        resources,
        previous,
        certs: HashMap::new(),
        cas: HashMap::new(),
        profiles: HashMap::new(),
    };
    let mut exact: HashMap<String, (Arc<Profile>, ObjectKey)> = HashMap::new();
    let mut wildcard: HashMap<String, (Arc<Profile>, ObjectKey)> = HashMap::new();
    let mut require_exact = HashSet::new();
    let mut require_wildcard = HashSet::new();

    for route in routes {
        let Some(tls) = &route.spec.tls else { continue };
        let key = route.meta.key();
        let requires = tls
            .client_certificate
            .as_ref()
            .is_some_and(|c| c.mode == ClientCertificateMode::Require);
        if requires {
            for host in &route.spec.hosts {
                let host = host.to_ascii_lowercase();
                match host.strip_prefix("*.") {
                    Some(parent) => require_wildcard.insert(parent.to_string()),
                    None => require_exact.insert(host),
                };
            }
        }
        let mut report = |field: String, message: String| {
            problems.push(Problem {
                kind: "Route",
                object: key.clone(),
                field,
                reason: Reason::InvalidCertificateRef,
                message,
            });
        };
        let cert_key = secret_key(&key, &tls.certificate_ref.name);
        let cert = match b.certificate(&cert_key) {
            Ok((cert, note)) => {
                if let Some(note) = note {
                    report("spec.tls.certificateRef".into(), note);
                }
                cert
            }
            Err(message) => {
                report("spec.tls.certificateRef".into(), message);
                continue;
            }
        };
        if let Some(why) = resources.now.and_then(|now| cert.validity_problem(now)) {
            report(
                "spec.tls.certificateRef".into(),
                format!("the certificate in Secret {cert_key} {why}"),
            );
        }
        let client = match &tls.client_certificate {
            None => Ok(None),
            Some(cc) => {
                let ca_key = secret_key(&key, &cc.ca_ref.name);
                match b.client_ca(&ca_key) {
                    Ok(ca) => Ok(Some((ca, cc.mode))),
                    Err(message) => {
                        report("spec.tls.clientCertificate.caRef".into(), message);
                        Err(())
                    }
                }
            }
        };
        // Serving these hosts without the client check would open them to everyone;
        // they get no TLS until the CA loads. Their names are still checked, so one run
        // reports every problem.
        let profile = match client.map(|c| b.profile(&cert, c)) {
            Ok(Ok(p)) => Some(p),
            Ok(Err(message)) => {
                report("spec.tls".into(), message);
                None
            }
            Err(()) => None,
        };
        for (i, host) in route.spec.hosts.iter().enumerate() {
            let host = host.to_ascii_lowercase();
            let field = format!("spec.hosts[{i}]");
            let (table, name) = match host.strip_prefix("*.") {
                Some(parent) => {
                    if !cert.names.iter().any(|n| n.eq_ignore_ascii_case(&host)) {
                        report(field, not_covered(&cert, &host));
                        continue;
                    }
                    (&mut wildcard, parent.to_string())
                }
                None => {
                    if !cert.covers(&host) {
                        report(field, not_covered(&cert, &host));
                        continue;
                    }
                    (&mut exact, host.clone())
                }
            };
            let Some(profile) = &profile else { continue };
            match table.get(&name) {
                Some((held, owner)) if held.id != profile.id => report(
                    field,
                    format!(
                        "host {host} already has the certificate of Route {owner}, which is older"
                    ),
                ),
                Some(_) => {}
                None => {
                    table.insert(name, (profile.clone(), key.clone()));
                }
            }
        }
    }

    let (default, default_problem) = match &resources.default_certificate {
        None => (None, None),
        Some(key) => match b
            .certificate(key)
            .and_then(|(cert, _)| b.profile(&cert, None))
        {
            Ok(p) => (Some(p), None),
            Err(message) => (None, Some(message)),
        },
    };

    let Builder {
        certs,
        cas,
        profiles,
        ..
    } = b;
    TlsTable {
        exact: exact.into_iter().map(|(k, (p, _))| (k, p)).collect(),
        wildcard: wildcard.into_iter().map(|(k, (p, _))| (k, p)).collect(),
        default,
        require_exact,
        require_wildcard,
        default_problem,
        // By the key each was found under, which is what the next build looks up.
        certs: certs
            .into_values()
            .filter_map(|v| v.ok().map(|(c, _)| (c.secret.clone(), c)))
            .collect(),
        cas: cas
            .into_values()
            .filter_map(|v| v.ok().map(|ca| (ca.secret.clone(), ca)))
            .collect(),
        profiles,
    }
}

/// The key of a Secret a Route names: in its own namespace, or, for folders loaded in
/// file mode, in the empty namespace.
fn secret_key(route: &ObjectKey, name: &str) -> ObjectKey {
    ObjectKey {
        namespace: route.namespace.clone(),
        name: name.to_string(),
    }
}

/// How messages name a Secret: file mode's folders have no namespace.
fn source_name(key: &ObjectKey) -> String {
    if key.namespace.is_empty() {
        format!("secrets folder {}", key.name)
    } else {
        format!("Secret {key}")
    }
}

fn not_covered(cert: &Certificate, host: &str) -> String {
    format!(
        "the certificate in {} does not cover host {host}; it names {}",
        source_name(&cert.secret),
        if cert.names.is_empty() {
            "no DNS name".to_string()
        } else {
            cert.names.join(", ")
        }
    )
}

/// A certificate, and a note when a previous good one stands in for a bad update.
type CertificateUse = (Arc<Certificate>, Option<String>);

/// Loads each Secret once per build, reusing what the previous table parsed when the
/// bytes are the same.
struct Builder<'a> {
    resources: &'a Resources,
    previous: Option<&'a TlsTable>,
    certs: HashMap<ObjectKey, Result<CertificateUse, String>>,
    cas: HashMap<ObjectKey, Result<Arc<ClientCa>, String>>,
    profiles: HashMap<ProfileKey, Arc<Profile>>,
}

impl Builder<'_> {
    fn certificate(&mut self, key: &ObjectKey) -> Result<CertificateUse, String> {
        if let Some(done) = self.certs.get(key) {
            return done.clone();
        }
        let result = match self.resources.secret(key) {
            None => Err(format!("Secret {key} not found")),
            Some((found, data)) => {
                let previous = self.previous.and_then(|p| p.certs.get(&found));
                match previous {
                    Some(old) if old.same_source(data) => Ok((old.clone(), None)),
                    _ => match Certificate::load(&found, data) {
                        Ok(cert) => Ok((Arc::new(cert), None)),
                        Err(why) => match previous {
                            Some(old) => Ok((
                                old.clone(),
                                Some(format!(
                                    "{}: {why}; the previous certificate keeps serving",
                                    source_name(&found)
                                )),
                            )),
                            None => Err(format!("{}: {why}", source_name(&found))),
                        },
                    },
                }
            }
        };
        self.certs.insert(key.clone(), result.clone());
        result
    }

    fn client_ca(&mut self, key: &ObjectKey) -> Result<Arc<ClientCa>, String> {
        if let Some(done) = self.cas.get(key) {
            return done.clone();
        }
        let result = match self.resources.secret(key) {
            None => Err(format!("Secret {key} not found")),
            Some((found, data)) => match self.previous.and_then(|p| p.cas.get(&found)) {
                Some(old) if old.same_source(data) => Ok(old.clone()),
                // A CA is not kept across a bad update: trusting an old CA that was
                // replaced would accept what its owner meant to revoke.
                _ => ClientCa::load(&found, data)
                    .map(Arc::new)
                    .map_err(|why| format!("{}: {why}", source_name(&found))),
            },
        };
        self.cas.insert(key.clone(), result.clone());
        result
    }

    fn profile(
        &mut self,
        cert: &Arc<Certificate>,
        client: Option<(Arc<ClientCa>, ClientCertificateMode)>,
    ) -> Result<Arc<Profile>, String> {
        let key = ProfileKey {
            cert: cert.secret.clone(),
            client: client.as_ref().map(|(ca, mode)| (ca.secret.clone(), *mode)),
        };
        if let Some(p) = self.profiles.get(&key) {
            return Ok(p.clone());
        }
        let same_parts = |p: &Profile| {
            Arc::ptr_eq(&p.cert, cert)
                && match (&p.client_ca, &client) {
                    (None, None) => true,
                    (Some(a), Some((b, _))) => Arc::ptr_eq(a, b),
                    _ => false,
                }
        };
        let profile = match self
            .previous
            .and_then(|p| p.profiles.get(&key))
            .filter(|p| same_parts(p))
        {
            // Kept whole, so its session cache survives unrelated changes.
            Some(p) => p.clone(),
            None => {
                let config = load::server_config(cert, client.as_ref())?;
                let mut h = std::collections::hash_map::DefaultHasher::new();
                key.hash(&mut h);
                // A replaced CA is a new id: connections verified by the old one get 421
                // and must show their certificate again.
                if let Some((ca, _)) = &client {
                    ca.source_bytes().hash(&mut h);
                }
                Arc::new(Profile {
                    id: h.finish(),
                    config: Arc::new(config),
                    cert: cert.clone(),
                    client_ca: client.map(|(ca, _)| ca),
                })
            }
        };
        self.profiles.insert(key, profile.clone());
        Ok(profile)
    }
}
