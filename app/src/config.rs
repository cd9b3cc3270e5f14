//! The webapp's one config model, read from TOML (`configs/webapp*.toml`),
//! then overlaid by command-line flags for per-instance values.

use onebook_domain::settings::{load_toml, CacheSettings, DatabaseSettings, SettingsError};
pub use onebook_service::Overrides;
use onebook_service::ServerSettings;
use serde::Deserialize;
use std::path::Path;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebappConfig {
    pub server: ServerSettings,
    #[serde(default)]
    pub web: WebSettings,
    pub database: DatabaseSettings,
    #[serde(default)]
    pub cache: CacheSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSettings {
    /// Send cookies with `Secure` (only over HTTPS). Turn off only to try
    /// the webapp directly over plain HTTP.
    #[serde(default = "yes")]
    pub secure_cookies: bool,
}

impl Default for WebSettings {
    fn default() -> Self {
        WebSettings {
            secure_cookies: true,
        }
    }
}

fn yes() -> bool {
    true
}

impl WebappConfig {
    pub fn load(path: &Path, overrides: &Overrides) -> Result<Self, SettingsError> {
        let mut config: WebappConfig = load_toml(path)?;
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

    /// Every example webapp config in configs/ must load.
    #[test]
    fn example_configs_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if name.starts_with("webapp") && name.ends_with(".toml") {
                WebappConfig::load(&path, &Overrides::default()).unwrap_or_else(|e| panic!("{e}"));
                seen += 1;
            }
        }
        assert!(seen >= 1, "no webapp*.toml in {}", dir.display());
    }

    #[test]
    fn overrides_win_over_the_file() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/webapp.dev.toml");
        let overrides = Overrides {
            listen: Some("127.0.0.1:9999".parse().unwrap()),
            instance: Some("webapp-9".into()),
            memcached: Some("127.0.0.1:11299".into()),
        };
        let config = WebappConfig::load(&path, &overrides).unwrap();
        assert_eq!(config.server.listen.port(), 9999);
        assert_eq!(config.server.instance, "webapp-9");
        assert_eq!(config.cache.memcached.as_deref(), Some("127.0.0.1:11299"));
    }
}
