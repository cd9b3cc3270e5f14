//! The webapp's one config model, read from TOML (`configs/webapp*.toml`),
//! then overlaid by command-line flags for per-instance values.

use onebook_domain::links::LinkSettings;
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
    /// The key that seals linked-account secrets (Google, Highrise).
    #[serde(default)]
    pub links: LinkSettings,
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
        config.links.validate(&file)?;
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

    /// The dev config carries its links key inline; the production example
    /// names a key file, read only when `serve` starts (and an error if it
    /// is missing, rather than running without being able to link).
    #[test]
    fn the_links_key_comes_inline_or_from_a_file() {
        let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
        let dev =
            WebappConfig::load(&configs.join("webapp.dev.toml"), &Overrides::default()).unwrap();
        let inline = dev.links.load("dev").unwrap().expect("dev has a key");
        let prod = WebappConfig::load(&configs.join("webapp.toml"), &Overrides::default()).unwrap();
        assert!(prod.links.key_file.is_some());
        assert!(matches!(
            prod.links.load("prod"),
            Err(SettingsError::Read { .. })
        ));

        let file = std::env::temp_dir().join(format!("onebook-links-{}.key", std::process::id()));
        std::fs::write(&file, format!("{}\n", dev.links.key.clone().unwrap())).unwrap();
        let from_file = LinkSettings {
            key_file: Some(file.clone()),
            key: None,
        }
        .load("test")
        .unwrap()
        .unwrap();
        std::fs::remove_file(&file).unwrap();
        assert_eq!(from_file.id(), inline.id());

        let bad: Result<WebappConfig, _> = onebook_domain::settings::parse_toml(
            "bad.toml",
            "[server]\nlisten = \"127.0.0.1:1\"\ninstance = \"x\"\n[database]\nshards = []\n[links]\nkey = \"abc\"\n",
        );
        assert!(bad.unwrap().links.validate("bad.toml").is_err());
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
