//! Layered configuration, shared by `bandit-sink` and `bandit-join`: figment
//! merges the TOML file, the program's environment variables and its flags,
//! in that order, over the configuration struct's defaults. Each program
//! names every setting's key, flag and variable once ([`Naming`]), and that
//! one table drives the help (each flag shows its variable and default), the
//! environment layer (an unknown variable is refused), and error messages
//! (which name the key as the user wrote it: TOML key, variable or flag).

use std::ffi::OsString;
use std::path::Path;

use figment::error::Kind;
use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Result, SinkError};

/// One setting: its TOML key (a configuration field), flag and variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    pub key: &'static str,
    pub flag: &'static str,
    pub env: &'static str,
}

pub const fn setting(key: &'static str, flag: &'static str, env: &'static str) -> Setting {
    Setting { key, flag, env }
}

/// How one program's settings are named.
#[derive(Debug)]
pub struct Naming {
    pub settings: &'static [Setting],
    /// The variable naming the file (read by clap, as the file is needed
    /// before the layers are).
    pub config_env: &'static str,
    /// Every variable of the program starts with it.
    pub env_prefix: &'static str,
    /// The program, as an error about an unknown variable names it.
    pub program: &'static str,
    /// Keys other tools spell differently, and what to write instead.
    pub other_spellings: &'static [(&'static str, &'static str)],
}

impl Naming {
    /// `command` with every setting's help naming its variable and, from
    /// `defaults` (the configuration's defaults as TOML), its default. The
    /// defaults are shown, not set: a flag left out must not override the
    /// file or the environment.
    #[must_use]
    pub fn help_with_defaults(&self, mut command: clap::Command, defaults: &toml::Table) -> clap::Command {
        for setting in self.settings {
            let default = default_shown(defaults, setting.key).map(|value| format!(" [default: {value}]")).unwrap_or_default();
            command = command.mut_arg(setting.key, |arg| {
                let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
                arg.help(format!("{help} [env: {}]{default}", setting.env))
            });
        }
        command
    }

    /// The layers merged: defaults < `file` < environment < `flags` (the
    /// command line serialized with the TOML keys, a flag left out absent).
    ///
    /// # Errors
    /// [`SinkError::Config`] for a missing file, an unknown variable or key,
    /// or a value of the wrong type, naming it as the user wrote it.
    pub fn layered<C: DeserializeOwned>(
        &'static self,
        file: Option<&Path>,
        flags: &impl Serialize,
        environment: impl IntoIterator<Item = (OsString, OsString)>,
    ) -> Result<C> {
        let mut figment = Figment::new();
        if let Some(path) = file {
            // figment's own `file` would search parent directories and take a
            // missing file as empty; a named file must exist.
            std::fs::metadata(path).map_err(|e| SinkError::Config(format!("cannot read {}: {e}", path.display())))?;
            figment = figment.merge(Toml::file_exact(path));
        }
        let flags = Value::serialize(flags).ok().and_then(Value::into_dict).unwrap_or_default();
        figment = figment
            .merge(Layer { naming: self, source: Source::Environment, dict: self.environment_layer(environment)? })
            .merge(Layer { naming: self, source: Source::Flags, dict: flags });
        // Lossy: the environment is text, "8" must read as a number.
        figment.extract_lossy::<C>().map_err(|error| self.describe(error))
    }

    fn setting_of(&self, key: &str) -> Option<&'static Setting> {
        self.settings.iter().find(|setting| setting.key == key)
    }

    /// The program's variables as keys. Values stay text (figment's `Env`
    /// would read `…_TOPIC=2024` as a number and refuse it for a topic);
    /// numbers are parsed by the lossy extraction. An unknown variable is
    /// refused, as an unknown key in the file is: it is most likely a typo
    /// that would otherwise be silently ignored.
    fn environment_layer(&self, environment: impl IntoIterator<Item = (OsString, OsString)>) -> Result<Dict> {
        let mut dict = Dict::new();
        for (name, value) in environment {
            let Some(name) = name.to_str().filter(|name| name.starts_with(self.env_prefix) && *name != self.config_env) else {
                continue;
            };
            let setting = self.settings.iter().find(|setting| setting.env == name).ok_or_else(|| {
                let known: Vec<&str> = self.settings.iter().map(|setting| setting.env).chain([self.config_env]).collect();
                SinkError::Config(format!("unknown environment variable {name}; {} reads {}", self.program, known.join(", ")))
            })?;
            let value = value.into_string().map_err(|_| SinkError::Config(format!("{name} is not valid UTF-8")))?;
            dict.insert(setting.key.to_owned(), Value::from(value));
        }
        Ok(dict)
    }

    /// figment's errors, one per line, each naming the key as the user
    /// wrote it and where; an unknown key in another tool's spelling is
    /// followed by the spelling this program reads.
    fn describe(&self, error: figment::Error) -> SinkError {
        let lines: Vec<String> = error.into_iter().map(|error| self.describe_one(&error)).collect();
        SinkError::Config(lines.join("\n"))
    }

    fn describe_one(&self, error: &figment::Error) -> String {
        let Some(metadata) = &error.metadata else { return error.to_string() };
        let (place, key) = match &metadata.source {
            Some(source) => (source.to_string(), error.path.join(".")),
            None => (metadata.name.to_string(), metadata.interpolate(&Profile::Default, &error.path)),
        };
        match &error.kind {
            Kind::UnknownField(field, known) => match self.other_spellings.iter().find(|(other, _)| other == field) {
                Some((_, right)) => format!("unknown key `{key}` in {place}: write {right}"),
                None => format!("unknown key `{key}` in {place}; the keys are {}", known.join(", ")),
            },
            Kind::UnknownVariant(value, known) => format!("{key} in {place}: `{value}` is not one of {}", known.join(", ")),
            kind if key.is_empty() => format!("{place}: {kind}"),
            kind => format!("{key} in {place}: {kind}"),
        }
    }
}

/// A setting's default as the help and the README show it, from the
/// configuration's defaults as TOML; `None` when it has none (an unset
/// topic, written as an empty string).
#[must_use]
pub fn default_shown(defaults: &toml::Table, key: &str) -> Option<String> {
    match defaults.get(key)? {
        toml::Value::String(text) if text.is_empty() => None,
        toml::Value::String(text) => Some(text.clone()),
        other => Some(other.to_string()),
    }
}

/// Which layer a [`Layer`] is.
#[derive(Debug, Clone, Copy)]
enum Source {
    Environment,
    Flags,
}

/// A layer of keys figment merges, named in its errors by what the user
/// wrote: the variable or the flag, not the key.
struct Layer {
    naming: &'static Naming,
    source: Source,
    dict: Dict,
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        let (naming, source) = (self.naming, self.source);
        let name = match source {
            Source::Environment => "environment",
            Source::Flags => "command line",
        };
        Metadata::named(name).interpolater(move |_: &Profile, keys: &[&str]| {
            let key = keys.join(".");
            let shown = keys.first().and_then(|first| naming.setting_of(first)).map(|setting| match source {
                Source::Environment => setting.env,
                Source::Flags => setting.flag,
            });
            shown.map_or(key, str::to_owned)
        })
    }

    fn data(&self) -> figment::Result<Map<Profile, Dict>> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}
