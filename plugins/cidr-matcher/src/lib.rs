//! `cidr-matcher`: matches when an address in the session's metadata falls in one of
//! the configured IPv4/IPv6 prefixes.
//!
//! ```yaml
//! match: {plugin: cidr, config: {path: /IP/src_addr, cidrs: ["10.0.0.0/8", "::1/128"]}}
//! ```

use std::net::IpAddr;

use l7mp_plugin_sdk::matcher::export_matcher;
use l7mp_plugin_sdk::matcher::exports::l7mp::plugin::matcher::Guest;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_path")]
    path: String,
    cidrs: Vec<String>,
}

fn default_path() -> String {
    "/IP/src_addr".into()
}

/// `(network, prefix length)` as 128-bit numbers, IPv4 mapped into IPv6.
fn prefix(cidr: &str) -> Result<(u128, u32), String> {
    let (addr, len) = cidr.split_once('/').unwrap_or((cidr, ""));
    let ip: IpAddr = addr.parse().map_err(|_| format!("bad address in {cidr:?}"))?;
    let (bits, offset) = match ip {
        IpAddr::V4(v4) => (v4.to_ipv6_mapped().to_bits(), 96),
        IpAddr::V6(v6) => (v6.to_bits(), 0),
    };
    let len: u32 = if len.is_empty() {
        128 - offset
    } else {
        len.parse().map_err(|_| format!("bad prefix length in {cidr:?}"))?
    };
    if len + offset > 128 {
        return Err(format!("prefix length too long in {cidr:?}"));
    }
    Ok((bits, len + offset))
}

fn address(text: &str) -> Option<u128> {
    // Accept "addr", "[v6]" and IPv4-mapped forms.
    let ip: IpAddr = text.trim_matches(|c| c == '[' || c == ']').parse().ok()?;
    Some(match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().to_bits(),
        IpAddr::V6(v6) => v6.to_bits(),
    })
}

fn contains((network, len): (u128, u32), addr: u128) -> bool {
    let mask = if len == 0 { 0 } else { u128::MAX << (128 - len) };
    network & mask == addr & mask
}

struct Plugin;

impl Guest for Plugin {
    fn matches(metadata: String, config: String) -> Result<bool, String> {
        let config: Config =
            serde_json::from_str(&config).map_err(|e| format!("cidr: config: {e}"))?;
        let prefixes = config.cidrs.iter().map(|c| prefix(c)).collect::<Result<Vec<_>, _>>()?;
        let metadata: serde_json::Value =
            serde_json::from_str(&metadata).map_err(|e| e.to_string())?;
        let Some(addr) = metadata.pointer(&config.path).and_then(|v| v.as_str()).and_then(address)
        else {
            return Ok(false);
        };
        Ok(prefixes.into_iter().any(|p| contains(p, addr)))
    }
}

export_matcher!(Plugin);
