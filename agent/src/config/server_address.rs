//! `server_address`: where the agent finds its servers. One `host:port`
//! string (as before), or a TOML array of them; a host that is a DNS name
//! stands for every address it resolves to (resolved again on each
//! reconnect, see `crate::servers`), so one headless-Service name covers
//! every replica. Each value is checked here; the message names the key,
//! the position in the list and the value.

use serde::Deserialize;

use super::{ConfigError, invalid};

/// Most entries in the list (a typo guard; a DNS name covers any number).
pub const MAX_SERVER_ADDRESSES: usize = 64;

/// `server_address` as written: a string or an array of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawServerAddress {
    One(String),
    Many(Vec<String>),
}

/// The checked `server_address`: one or more `host:port`, in the order
/// written, without duplicates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddresses(Vec<String>);

impl ServerAddresses {
    /// The `host:port` targets, in the order written (never empty).
    pub fn targets(&self) -> &[String] {
        &self.0
    }
}

impl std::fmt::Display for ServerAddresses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join(", "))
    }
}

/// Whether `s` is `host:port` with a non-empty host and a port number.
fn is_host_port(s: &str) -> bool {
    s.rsplit_once(':').is_some_and(|(h, p)| {
        !h.is_empty() && !h.contains(char::is_whitespace) && p.parse::<u16>().is_ok_and(|p| p != 0)
    })
}

impl RawServerAddress {
    /// Checks every value (`host:port`, port 1 to 65535), the list's
    /// length (1 to [`MAX_SERVER_ADDRESSES`]) and that no value repeats.
    pub fn check(self) -> Result<ServerAddresses, ConfigError> {
        const KEY: &str = "server_address";
        let (list, one) = match self {
            RawServerAddress::One(s) => (vec![s], true),
            RawServerAddress::Many(v) => (v, false),
        };
        if list.is_empty() {
            return Err(invalid(
                KEY,
                "the list is empty: name at least one server as \"host:port\"",
            ));
        }
        if list.len() > MAX_SERVER_ADDRESSES {
            return Err(invalid(
                KEY,
                format!(
                    "{} servers listed, more than {MAX_SERVER_ADDRESSES}: list fewer, or use one \
                     DNS name that resolves to every server",
                    list.len()
                ),
            ));
        }
        for (i, s) in list.iter().enumerate() {
            let place = if one {
                String::new()
            } else {
                format!("[{i}] ")
            };
            if !is_host_port(s) {
                return Err(invalid(KEY, format!("{place}{s:?} must be host:port")));
            }
            if list[..i].contains(s) {
                return Err(invalid(KEY, format!("{place}{s:?} is listed twice")));
            }
        }
        Ok(ServerAddresses(list))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(v: RawServerAddress) -> Result<Vec<String>, String> {
        v.check()
            .map(|a| a.targets().to_vec())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn item4_server_address_is_one_or_a_list_and_names_bad_values() {
        use RawServerAddress::{Many, One};
        assert_eq!(check(One("a:1".into())).unwrap(), ["a:1"]);
        assert_eq!(
            check(Many(vec!["a:1".into(), "10.0.0.2:8081".into()])).unwrap(),
            ["a:1", "10.0.0.2:8081"]
        );
        for (v, needle) in [
            (
                One("nohost".into()),
                "server_address: \"nohost\" must be host:port",
            ),
            (One(":80".into()), "\":80\" must be host:port"),
            (One("a:0".into()), "\"a:0\" must be host:port"),
            (Many(vec![]), "server_address: the list is empty"),
            (
                Many(vec!["a:1".into(), "b".into()]),
                "server_address: [1] \"b\" must be host:port",
            ),
            (
                Many(vec!["a:1".into(), "a:1".into()]),
                "server_address: [1] \"a:1\" is listed twice",
            ),
            (
                Many((0..65).map(|i| format!("h{i}:1")).collect()),
                "65 servers listed, more than 64",
            ),
        ] {
            let e = check(v).unwrap_err();
            assert!(e.contains(needle), "{needle}: {e}");
        }
    }
}
