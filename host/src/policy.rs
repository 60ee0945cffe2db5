//! The operator's policy: what each plugin may read, write and know, decided in kp's config file
//! (which the plugins folder cannot change), never by the plugin's own manifest alone.
//!
//! ```toml
//! tenancy = "governed"            # or "open" (the default)
//!
//! [policy.default]               # governed: plugins without a table of their own
//! consume = []                    # nothing
//!
//! [policy.orders]
//! consume = ["orders", "orders-*"] # topics it may read: names, or prefixes ending in '*'
//! produce = ["orders-enriched", "orders-dlq"]
//! group-id = "kp-orders"          # its consumer group (default kp-NAME; a manifest may not choose another)
//! env = ["ORDERS_API_URL"]        # environment variables it may receive
//! max-memory-mib = 128            # ceilings on what its manifest may ask
//! max-timeout-ms = 10000
//! explicit-partitions = false     # may outputs name a partition? (default true)
//! max-instances = 8               # its share of the instance pool (default: no cap)
//! allow-loops = false             # may its outputs reach its own inputs? (default false)
//! [policy.orders.config]         # values only this plugin receives (through kp:plugin/config)
//! api-key = "${file:/run/secrets/orders-api-key}"
//! ```
//!
//! **Open** (the default, one team): a plugin without a table runs as its manifest says, within
//! the rules that always hold (declared output topics only, none starting with `_`, no `kp.*`
//! headers from guests, no two plugins in one group, no loops); a table restricts the fields it
//! sets. **Governed** (several teams): a plugin runs only under its own table or
//! `[policy.default]`, and a field a table leaves out allows nothing (consume, produce, env) or
//! takes kp's default (group `kp-NAME`). A manifest may ask for less than its policy, never more:
//! what it asks beyond it refuses the plugin at load and at every reload, with the reason.

use std::collections::BTreeMap;

use anyhow::Result;
use serde::Deserialize;

use crate::manifest::Manifest;

/// Whether plugins without a policy of their own may run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tenancy {
    /// One team: manifests decide, within the rules that always hold.
    #[default]
    Open,
    /// Several teams: only what the operator's policy grants.
    Governed,
}

/// One plugin's policy (`[policy.NAME]`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PluginPolicy {
    /// Topics it may consume: names, or prefixes ending in `*`.
    pub consume: Option<Vec<String>>,
    /// Topics it may produce to (its declared outputs and its dead-letter topic).
    pub produce: Option<Vec<String>>,
    /// Its consumer group.
    pub group_id: Option<String>,
    /// Environment variables it may receive.
    pub env: Option<Vec<String>>,
    /// Ceiling on `[limits] memory-mib`.
    pub max_memory_mib: Option<u64>,
    /// Ceiling on `[limits] timeout-ms`.
    pub max_timeout_ms: Option<u64>,
    /// May an output name its partition? Default true.
    pub explicit_partitions: Option<bool>,
    /// Its share of the instance pool: most instances alive at once (one per partition it is
    /// handling). Beyond it, its partitions wait for an instance; no message fails for it.
    pub max_instances: Option<u32>,
    /// May its outputs reach its own inputs (directly or through other plugins)? Default false.
    #[serde(default)]
    pub allow_loops: bool,
    /// Config values only this plugin receives; they override the manifest's. Values may be
    /// `${env:NAME}` or `${file:PATH}`.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
}

/// The operator's policy for every plugin.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policy {
    pub tenancy: Tenancy,
    pub plugins: BTreeMap<String, PluginPolicy>,
}

/// True when `topic` is allowed by one of `patterns` (names, or prefixes ending in `*`).
fn matches(patterns: &[String], topic: &str) -> bool {
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => topic.starts_with(prefix),
        None => p == topic,
    })
}

impl Policy {
    /// Reads the `${env:..}`/`${file:..}` config values of every plugin's policy.
    pub fn resolve_references(&mut self) -> Result<()> {
        for (name, policy) in &mut self.plugins {
            for (key, value) in &mut policy.config {
                let label = format!("policy.{name}.config.{key}");
                if let Some(resolved) = crate::kafka::settings::resolve_reference(&label, value)? {
                    *value = resolved;
                }
            }
        }
        Ok(())
    }

    /// The policy that applies to plugin `name`: its own table, else (governed) the default one.
    fn of(&self, name: &str) -> Result<Option<&PluginPolicy>, String> {
        match (self.plugins.get(name), self.tenancy) {
            (Some(policy), _) => Ok(Some(policy)),
            (None, Tenancy::Open) => Ok(None),
            (None, Tenancy::Governed) => self.plugins.get("default").map(Some).ok_or_else(|| {
                format!(
                    "kp runs governed (tenancy = \"governed\") and its config file has no \
                     [policy.{name}] (nor [policy.default]): the operator must grant this plugin \
                     its topics first"
                )
            }),
        }
    }

    /// Checks `manifest` against the operator's policy and applies what the operator decides
    /// (group, extra config, partition rule). The error says what was asked beyond the policy.
    pub fn apply(&self, manifest: &mut Manifest) -> Result<(), String> {
        let name = manifest.name.clone();
        let Some(policy) = self.of(&name)? else {
            return Ok(());
        };
        let governed = self.tenancy == Tenancy::Governed;
        let nothing = Vec::new();
        let allowed = |list: &Option<Vec<String>>| -> Option<Vec<String>> {
            match list {
                Some(list) => Some(list.clone()),
                None if governed => Some(nothing.clone()),
                None => None,
            }
        };
        let table = if self.plugins.contains_key(&name) {
            format!("[policy.{name}]")
        } else {
            "[policy.default]".to_string()
        };
        if let Some(consume) = allowed(&policy.consume) {
            for topic in &manifest.input_topics {
                if !matches(&consume, topic) {
                    return Err(format!(
                        "reads topic {topic:?}, which {table} consume does not allow"
                    ));
                }
            }
        }
        if let Some(produce) = allowed(&policy.produce) {
            let writes = manifest
                .declared_outputs()
                .chain(&manifest.on_failure.dead_letter_topic);
            for topic in writes {
                if !matches(&produce, topic) {
                    return Err(format!(
                        "writes topic {topic:?}, which {table} produce does not allow"
                    ));
                }
            }
        }
        let group = policy
            .group_id
            .clone()
            .or_else(|| governed.then(|| format!("kp-{name}")));
        if let Some(group) = group {
            if manifest.group_id_set && manifest.group_id != group {
                return Err(format!(
                    "its manifest asks for consumer group {:?}; the operator gives it {group:?} \
                     ({table} group-id): drop group-id from the manifest",
                    manifest.group_id
                ));
            }
            manifest.group_id = group;
        }
        if let Some(env) = allowed(&policy.env)
            && let Some(name) = manifest.capabilities.env.iter().find(|v| !env.contains(v))
        {
            return Err(format!(
                "asks for the environment variable {name}, which {table} env does not grant"
            ));
        }
        if let Some(max) = policy.max_memory_mib
            && manifest.limits.memory_bytes > max << 20
        {
            return Err(format!(
                "asks for {} MiB of memory, above {table} max-memory-mib = {max}",
                manifest.limits.memory_bytes >> 20
            ));
        }
        if let Some(max) = policy.max_timeout_ms
            && manifest.limits.timeout.as_millis() > u128::from(max)
        {
            return Err(format!(
                "asks for a {} ms deadline, above {table} max-timeout-ms = {max}",
                manifest.limits.timeout.as_millis()
            ));
        }
        if let Some(explicit) = policy.explicit_partitions {
            manifest.explicit_partitions = explicit;
        }
        manifest.max_instances = policy.max_instances;
        for (key, value) in &policy.config {
            manifest.config.insert(key.clone(), value.clone());
        }
        Ok(())
    }

    /// May plugin `name`'s outputs reach its own inputs?
    pub fn allows_loops(&self, name: &str) -> bool {
        self.of(name).ok().flatten().is_some_and(|p| p.allow_loops)
    }
}

/// The topics plugin `start` can reach by writing, directly or through the plugins in `others`
/// (name, inputs, outputs), and whether one of them is among its own inputs: the loop, as a
/// chain of topics, if there is one.
pub fn find_loop(
    inputs: &[String],
    outputs: &[String],
    others: &[(String, Vec<String>, Vec<String>)],
) -> Option<Vec<String>> {
    let mut reached: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut queue: Vec<(String, Vec<String>)> = outputs
        .iter()
        .map(|t| (t.clone(), vec![t.clone()]))
        .collect();
    while let Some((topic, path)) = queue.pop() {
        if inputs.contains(&topic) {
            return Some(path);
        }
        if reached.insert(topic.clone(), path.clone()).is_some() {
            continue;
        }
        for (_, their_inputs, their_outputs) in others {
            if their_inputs.contains(&topic) {
                for next in their_outputs {
                    let mut longer = path.clone();
                    longer.push(next.clone());
                    queue.push((next.clone(), longer));
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(text: &str) -> Manifest {
        Manifest::parse("orders", text).unwrap()
    }

    fn policy(tenancy: Tenancy, table: &str) -> Policy {
        let plugins: BTreeMap<String, PluginPolicy> = toml::from_str(table).unwrap();
        Policy { tenancy, plugins }
    }

    #[test]
    fn open_without_a_table_lets_the_manifest_decide() {
        let mut m = manifest(
            "input-topics = [\"a\"]\noutput-topic = \"b\"\ngroup-id = \"g\"\n[capabilities]\nenv = [\"X\"]\n",
        );
        Policy::default().apply(&mut m).unwrap();
        assert_eq!(m.group_id, "g");
    }

    #[test]
    fn governed_allows_only_what_is_granted() {
        let p = policy(
            Tenancy::Governed,
            "[orders]\nconsume = [\"orders-*\"]\nproduce = [\"out\"]\n",
        );
        let mut ok = manifest("input-topics = [\"orders-eu\"]\noutput-topic = \"out\"\n");
        p.apply(&mut ok).unwrap();
        assert_eq!(ok.group_id, "kp-orders", "forced");
        let why = p
            .apply(&mut manifest("input-topics = [\"payments\"]\n"))
            .unwrap_err();
        assert!(why.contains("payments") && why.contains("consume"), "{why}");
        let why = p
            .apply(&mut manifest(
                "input-topics = [\"orders-eu\"]\noutput-topic = \"other\"\n",
            ))
            .unwrap_err();
        assert!(why.contains("other") && why.contains("produce"), "{why}");
        let why = p
            .apply(&mut manifest(
                "input-topics = [\"orders-eu\"]\ngroup-id = \"kp-victim\"\n",
            ))
            .unwrap_err();
        assert!(why.contains("kp-victim"), "{why}");
        let why = p
            .apply(&mut manifest("input-topics = [\"orders-eu\"]\n[capabilities]\nenv = [\"AWS_SECRET_ACCESS_KEY\"]\n"))
            .unwrap_err();
        assert!(why.contains("AWS_SECRET_ACCESS_KEY"), "{why}");
        let mut stranger = Manifest::parse("stranger", "input-topics = [\"x\"]\n").unwrap();
        assert!(
            p.apply(&mut stranger)
                .unwrap_err()
                .contains("[policy.stranger]")
        );
    }

    #[test]
    fn ceilings_and_operator_config() {
        let p = policy(
            Tenancy::Open,
            "[orders]\nmax-memory-mib = 32\nmax-timeout-ms = 100\n[orders.config]\nkey = \"s3cret\"\n",
        );
        assert!(
            p.apply(&mut manifest("input-topics = [\"a\"]\n"))
                .unwrap_err()
                .contains("max-memory-mib")
        );
        let mut m = manifest(
            "input-topics = [\"a\"]\n[limits]\nmemory-mib = 16\ntimeout-ms = 50\n[config]\nkey = \"mine\"\n",
        );
        p.apply(&mut m).unwrap();
        assert_eq!(m.config["key"], "s3cret", "the operator's value wins");
    }

    #[test]
    fn loops_are_found_through_other_plugins() {
        let others = vec![(
            "b".to_string(),
            vec!["t2".to_string()],
            vec!["t3".to_string()],
        )];
        assert_eq!(
            find_loop(&["t3".into()], &["t2".into()], &others),
            Some(vec!["t2".to_string(), "t3".to_string()])
        );
        assert_eq!(
            find_loop(&["t1".into()], &["t1".into()], &[]),
            Some(vec!["t1".to_string()])
        );
        assert_eq!(find_loop(&["t1".into()], &["t2".into()], &others), None);
    }
}
