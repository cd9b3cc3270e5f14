//! The bots' config model (`configs/bots*.toml`).

use onebook_domain::settings::{load_toml, DatabaseSettings, EventsSettings, SettingsError};
use onebook_service::ServerSettings;
use serde::Deserialize;
use std::path::Path;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BotsConfig {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub events: EventsSettings,
}

impl BotsConfig {
    pub fn load(path: &Path) -> Result<Self, SettingsError> {
        let config: BotsConfig = load_toml(path)?;
        let file = path.display().to_string();
        config.database.validate(&file)?;
        if !config.events.amqp_url.starts_with("amqp://")
            && !config.events.amqp_url.starts_with("amqps://")
        {
            return Err(SettingsError::Invalid {
                file,
                key: "events.amqp_url".into(),
                reason: "must start with amqp:// or amqps://".into(),
            });
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_configs_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if name.starts_with("bots") && name.ends_with(".toml") {
                BotsConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
                seen += 1;
            }
        }
        assert!(seen >= 1);
    }
}
