//! The sync-server's config model (`configs/sync-server*.toml`), overlaid
//! by per-instance command-line flags.

use onebook_domain::settings::{load_toml, CacheSettings, DatabaseSettings, SettingsError};
pub use onebook_service::Overrides;
use onebook_service::ServerSettings;
use serde::Deserialize;
use std::path::Path;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncServerConfig {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    #[serde(default)]
    pub cache: CacheSettings,
}

impl SyncServerConfig {
    pub fn load(path: &Path, overrides: &Overrides) -> Result<Self, SettingsError> {
        let mut config: SyncServerConfig = load_toml(path)?;
        overrides.apply(&mut config.server, &mut config.cache);
        let file = path.display().to_string();
        config.database.validate(&file)?;
        config.cache.validate(&file)?;
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
            if name.starts_with("sync-server") && name.ends_with(".toml") {
                SyncServerConfig::load(&path, &Overrides::default())
                    .unwrap_or_else(|e| panic!("{e}"));
                seen += 1;
            }
        }
        assert!(seen >= 1);
    }
}
