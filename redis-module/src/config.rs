//! Module arguments, given at load time:
//! `loadmodule libbandit_redis.so [ALPHA a] [LAMBDA l] [MAX-DIM n] [MAX-ARMS n]
//! [MAX-PAYLOAD-BYTES n] [MAX-ID-BYTES n] [MAX-TOP n] [RANK-THREADS n]
//! [PARTS-IDLE-SECONDS n]`.
//! They live in a process-wide cell that every command reads (a copy per
//! command); `CONFIG SET bandit.<name>` changes them at run time where the
//! server has module configs (see [`crate::runtime_config`]); INFO shows
//! them (section `bandit_config`).

use std::sync::{OnceLock, PoisonError, RwLock};

use bandit_core::number::Shortest;
use bandit_core::{Limits, ModelSettings};

/// Everything the module arguments set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModuleConfig {
    /// ALPHA for models created without one (CREATE, or LOAD of a missing key).
    pub default_alpha: f64,
    /// LAMBDA for models created without one.
    pub default_lambda: f64,
    pub limits: Limits,
    /// Threads one RANK over a large model (over a million stored values)
    /// may use; 1 keeps every command on Redis' own thread.
    pub rank_threads: usize,
    /// Seconds a flush sent in parts may go without a part arriving before
    /// its received parts are dropped (`BANDIT.LOAD … PART`).
    pub parts_idle_seconds: usize,
}

impl Default for ModuleConfig {
    fn default() -> Self {
        Self { default_alpha: 1.0, default_lambda: 1.0, limits: Limits::default(), rank_threads: 1, parts_idle_seconds: 60 }
    }
}

static CONFIG: OnceLock<RwLock<ModuleConfig>> = OnceLock::new();

fn cell() -> &'static RwLock<ModuleConfig> {
    CONFIG.get_or_init(|| RwLock::new(ModuleConfig::default()))
}

/// The configuration in force (defaults before load has finished). A copy:
/// `CONFIG SET` may change it between commands, never during one.
pub fn get() -> ModuleConfig {
    *cell().read().unwrap_or_else(PoisonError::into_inner)
}

/// Parses the module arguments and installs them.
pub fn install(args: &[&[u8]]) -> Result<ModuleConfig, String> {
    let parsed = parse(args)?;
    *cell().write().unwrap_or_else(PoisonError::into_inner) = parsed;
    Ok(parsed)
}

/// Sets one setting by name (a module argument name, any case, or a config
/// name such as `max-top`) from its text, as a module argument or
/// `CONFIG SET bandit.<name>` gives it; nothing changes on error.
pub fn set(name: &str, value: &str) -> Result<(), String> {
    let mut config = cell().write().unwrap_or_else(PoisonError::into_inner);
    let mut changed = *config;
    apply(&mut changed, &name.to_ascii_uppercase(), value)?;
    check(&changed)?;
    *config = changed;
    Ok(())
}

/// The text of one setting (for `CONFIG GET`), or None for an unknown name.
pub fn value_of(name: &str) -> Option<String> {
    let config = get();
    let limits = config.limits;
    Some(match name.to_ascii_uppercase().as_str() {
        "ALPHA" => Shortest(config.default_alpha).to_string(),
        "LAMBDA" => Shortest(config.default_lambda).to_string(),
        "MAX-DIM" => limits.max_dim.to_string(),
        "MAX-ARMS" => limits.max_arms.to_string(),
        "MAX-PAYLOAD-BYTES" => limits.max_payload_bytes.to_string(),
        "MAX-ID-BYTES" => limits.max_id_bytes.to_string(),
        "MAX-TOP" => limits.max_top.to_string(),
        "RANK-THREADS" => config.rank_threads.to_string(),
        "PARTS-IDLE-SECONDS" => config.parts_idle_seconds.to_string(),
        _ => return None,
    })
}

/// The argument names, as written in docs and error messages.
pub const NAMES: &[&str] =
    &["ALPHA", "LAMBDA", "MAX-DIM", "MAX-ARMS", "MAX-PAYLOAD-BYTES", "MAX-ID-BYTES", "MAX-TOP", "RANK-THREADS", "PARTS-IDLE-SECONDS"];

pub fn parse(args: &[&[u8]]) -> Result<ModuleConfig, String> {
    let mut config = ModuleConfig::default();
    let mut pairs = args.chunks_exact(2);
    for pair in pairs.by_ref() {
        let (Some(name), Some(value)) = (pair.first(), pair.get(1)) else { continue };
        let name = String::from_utf8_lossy(name).to_ascii_uppercase();
        let value = std::str::from_utf8(value).map_err(|_| format!("{name} must be a number"))?;
        apply(&mut config, &name, value)?;
    }
    if let Some(dangling) = pairs.remainder().first() {
        return Err(format!("module argument '{}' has no value", String::from_utf8_lossy(dangling)));
    }
    check(&config)?;
    Ok(config)
}

/// One setting, by its upper-case name.
fn apply(config: &mut ModuleConfig, name: &str, value: &str) -> Result<(), String> {
    let limits = &mut config.limits;
    match name {
        "ALPHA" => config.default_alpha = float(name, value)?,
        "LAMBDA" => config.default_lambda = float(name, value)?,
        "MAX-DIM" => limits.max_dim = count(name, value)?,
        "MAX-ARMS" => limits.max_arms = count(name, value)?,
        "MAX-PAYLOAD-BYTES" => limits.max_payload_bytes = count(name, value)?,
        "MAX-ID-BYTES" => limits.max_id_bytes = count(name, value)?,
        "MAX-TOP" => limits.max_top = count(name, value)?,
        "RANK-THREADS" => {
            config.rank_threads = count(name, value)?;
            if config.rank_threads > 16 {
                return Err(format!("RANK-THREADS must be at most 16, got {value}"));
            }
        }
        "PARTS-IDLE-SECONDS" => config.parts_idle_seconds = count(name, value)?,
        _ => return Err(format!("unknown module argument '{name}' (known: {})", NAMES.join(", "))),
    }
    Ok(())
}

/// The defaults must themselves make a valid model.
fn check(config: &ModuleConfig) -> Result<(), String> {
    ModelSettings { dim: 1, alpha: config.default_alpha, lambda: config.default_lambda, decay: 1.0 }
        .validate(&config.limits)
        .map_err(|e| e.to_string())
}

fn float(name: &str, value: &str) -> Result<f64, String> {
    value.parse::<f64>().ok().filter(|v| v.is_finite()).ok_or_else(|| format!("{name} must be a finite number, got '{value}'"))
}

fn count(name: &str, value: &str) -> Result<usize, String> {
    value.parse::<usize>().ok().filter(|&v| v > 0).ok_or_else(|| format!("{name} must be a positive integer, got '{value}'"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_arguments_case_insensitively() {
        let config = parse(&[b"alpha", b"0.5", b"MAX-DIM", b"64", b"Max-Top", b"10"]).unwrap();
        assert_eq!(config.default_alpha, 0.5);
        assert_eq!(config.limits.max_dim, 64);
        assert_eq!(config.limits.max_top, 10);
    }

    #[test]
    fn one_setting_changes_only_when_valid() {
        install(&[b"ALPHA", b"0.5"]).unwrap();
        set("max-top", "7").unwrap();
        assert_eq!((get().limits.max_top, get().default_alpha), (7, 0.5));
        assert!(set("lambda", "0").unwrap_err().contains("LAMBDA"));
        assert!(set("max-dim", "x").unwrap_err().contains("positive integer"));
        assert!(set("nope", "1").unwrap_err().contains("unknown"));
        assert_eq!(get().default_lambda, 1.0, "a refused value changes nothing");
        assert_eq!(value_of("alpha").as_deref(), Some("0.5"));
        assert_eq!(value_of("MAX-TOP").as_deref(), Some("7"));
        assert_eq!(value_of("bogus"), None);
    }

    #[test]
    fn rejects_bad_arguments() {
        assert!(parse(&[b"BOGUS", b"1"]).unwrap_err().contains("unknown module argument 'BOGUS'"));
        assert!(parse(&[b"ALPHA"]).unwrap_err().contains("has no value"));
        assert!(parse(&[b"LAMBDA", b"0"]).unwrap_err().contains("LAMBDA"));
        assert!(parse(&[b"MAX-DIM", b"-3"]).unwrap_err().contains("positive integer"));
        assert!(parse(&[b"ALPHA", b"nan"]).unwrap_err().contains("finite"));
    }
}
