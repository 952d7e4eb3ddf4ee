//! `portcullis demo`: the gateway on the example configuration, with its echo backends
//! started in the same process.

use crate::{echo, gateway, source::file};
use std::{collections::BTreeSet, net::SocketAddr};

/// The configuration the demo serves, also shipped as `examples/demo.yaml`.
pub const DEMO_CONFIG: &str = include_str!("../examples/demo.yaml");

/// Writes the demo configuration to a private folder, starts an echo backend for every
/// address it names, then the gateway. Returns the gateway and the folder (which must
/// outlive it).
pub async fn start(
    mut opts: gateway::Options,
) -> anyhow::Result<(gateway::Gateway, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("demo.yaml");
    std::fs::write(&path, DEMO_CONFIG)?;

    let loaded = file::load(&path).map_err(gateway::InvalidConfig)?;
    let addresses: BTreeSet<String> = loaded
        .resources
        .routes
        .iter()
        .flat_map(|r| &r.spec.rules)
        .flat_map(|rule| &rule.backends)
        .filter_map(|b| b.address.clone())
        .collect();
    for (i, addr) in addresses.iter().enumerate() {
        let sock: SocketAddr = addr.parse()?;
        let listener = tokio::net::TcpListener::bind(sock).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot start the demo backend on {addr}: {e} (is another demo running?)"
            )
        })?;
        let name = ["users-v1", "users-v2", "orders", "admin"]
            .get(i)
            .map_or_else(|| format!("echo-{i}"), |n| n.to_string());
        tokio::spawn(echo::serve(listener, name));
    }

    opts.source = gateway::Source::Files(path);
    let gw = gateway::Gateway::start(opts).await?;
    Ok((gw, dir))
}

/// What to try, printed when the demo is up.
pub fn instructions(listen: SocketAddr, admin: SocketAddr) -> String {
    let base = format!("http://{listen}");
    format!(
        "\nPortcullis demo is up. Try:\n\n  \
         curl -s {base}/users/1                       # 3 in 4 answered by users-v1\n  \
         curl -s -H 'x-canary: true' {base}/users/1   # always users-v2\n  \
         curl -s {base}/api/orders/42                 # rewritten to /orders/42\n  \
         curl -si {base}/api/orders/42                # again: from the cache, with Age\n  \
         curl -si {base}/old-orders                   # 301 to /api/orders\n  \
         curl -sN {base}/sse                          # Server-Sent Events, one by one\n  \
         curl -sN --compressed {base}/sse             # the same, compressed\n  \
         curl -s -H 'Host: admin.example.com' {base}/ # host-based route\n  \
         curl -s {base}/nowhere                       # 404 with a request id\n\n  \
         curl -s http://{admin}/config                # what is being served\n  \
         curl -s http://{admin}/metrics\n\nPress Ctrl-C to stop.\n"
    )
}
