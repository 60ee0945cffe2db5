//! `kp version`: what this binary is and what it can do: kp's version, the versions of wasmtime
//! and librdkafka it was built with, and librdkafka's built-in features (TLS, SASL mechanisms,
//! compression codecs), as librdkafka itself reports them.

use std::fmt;

use rdkafka::ClientConfig;

/// kp's build, as `kp version` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInfo {
    pub kp: &'static str,
    pub wasmtime: &'static str,
    pub rdkafka: &'static str,
    /// librdkafka's version string, e.g. "2.12.1".
    pub librdkafka: String,
    /// librdkafka's `builtin.features`, e.g. `["gzip", "snappy", "ssl", ...]`.
    pub features: Vec<String>,
}

impl BuildInfo {
    /// Reads the versions and asks librdkafka for its built-in features.
    pub fn current() -> Self {
        let (_, librdkafka) = rdkafka::util::get_rdkafka_version();
        let features = ClientConfig::new()
            .create_native_config()
            .and_then(|c| c.get("builtin.features"))
            .map(|list| list.split(',').map(str::to_string).collect())
            .unwrap_or_default();
        BuildInfo {
            kp: env!("CARGO_PKG_VERSION"),
            wasmtime: env!("KP_WASMTIME_VERSION"),
            rdkafka: env!("KP_RDKAFKA_VERSION"),
            librdkafka,
            features,
        }
    }

    pub fn has(&self, feature: &str) -> bool {
        self.features.iter().any(|f| f == feature)
    }

    /// The SASL mechanisms this build can use.
    pub fn sasl_mechanisms(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.has("sasl_plain") {
            out.push("PLAIN");
        }
        if self.has("sasl_scram") {
            out.extend(["SCRAM-SHA-256", "SCRAM-SHA-512"]);
        }
        if self.has("sasl_oauthbearer") {
            out.push("OAUTHBEARER");
        }
        if self.has("sasl_gssapi") {
            out.push("GSSAPI");
        }
        out
    }

    /// The compression codecs this build can read and write ("none" always).
    pub fn codecs(&self) -> Vec<&'static str> {
        ["gzip", "snappy", "lz4", "zstd"]
            .into_iter()
            .filter(|c| self.has(c))
            .collect()
    }
}

impl fmt::Display for BuildInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let yes = |b: bool| if b { "yes" } else { "no" };
        writeln!(f, "kp {}", self.kp)?;
        writeln!(f, "wasmtime {}", self.wasmtime)?;
        writeln!(
            f,
            "librdkafka {} (rdkafka crate {})",
            self.librdkafka, self.rdkafka
        )?;
        writeln!(f, "tls: {}", yes(self.has("ssl")))?;
        writeln!(f, "sasl: {}", self.sasl_mechanisms().join(" "))?;
        writeln!(
            f,
            "oauthbearer oidc (client credentials): {}",
            yes(self.has("oidc"))
        )?;
        writeln!(f, "codecs: {}", self.codecs().join(" "))?;
        writeln!(f, "librdkafka features: {}", self.features.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the README promises this build can do.
    #[test]
    fn this_build_has_tls_every_sasl_mechanism_and_every_codec() {
        let info = BuildInfo::current();
        assert!(info.has("ssl"), "{info}");
        assert_eq!(
            info.sasl_mechanisms(),
            ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"],
            "{info}"
        );
        assert!(info.has("oidc"), "{info}");
        assert_eq!(info.codecs(), ["gzip", "snappy", "lz4", "zstd"], "{info}");
        assert!(info.wasmtime.starts_with("48."), "{info}");
    }
}
