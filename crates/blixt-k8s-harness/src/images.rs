//! Container images, emulated: the node agent pulls nothing and runs no containers; each image
//! name maps (by prefix) to a program on this machine, through the table the caller gives.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;

/// Image names of the Gateway API conformance suite's backend, mapped by
/// [`ImageTable::echo_basic`].
pub const ECHO_BASIC_IMAGES: &[&str] = &[
    "registry.k8s.io/gateway-api/conformance/echo-basic",
    "registry.k8s.io/gateway-api/echo-basic",
    "gcr.io/k8s-staging-gateway-api/echo-basic",
];

/// Which program runs for which image. Lookup is by prefix of the image reference
/// (`registry/name:tag`); the longest matching prefix wins. An image no prefix matches leaves
/// its Pod waiting with reason `ErrImagePull` and a message naming the image and the prefixes.
///
/// ```no_run
/// # fn example() -> anyhow::Result<()> {
/// use blixt_k8s_harness::{ImageTable, Program};
/// let images = ImageTable::new()
///     .echo_basic()? // the conformance backends, built by tests/k8s/build.sh
///     .map("blixt", Program::new("target/debug/blixt"))
///     .map("busybox", Program::host_commands()); // `command: ["cat", ...]` runs the host's cat
/// # let _ = images; Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct ImageTable {
    entries: Vec<(String, Program)>,
}

/// What an image runs: its entrypoint (`ENTRYPOINT`), default arguments (`CMD`), environment
/// (`ENV`), and which programs a container's `command` may name.
///
/// As in Kubernetes, a container without `command` runs the entrypoint with its `args` (or the
/// default arguments when it has none). A container with `command` runs `command[0]`, resolved
/// as: the entrypoint (by its path or file name), then a program mapped with
/// [`Program::command`], then, if [`Program::allow_host_commands`], an absolute path or a name
/// on the host's `PATH`; anything else fails the container (`CreateContainerError`).
#[derive(Debug, Clone, Default)]
pub struct Program {
    entrypoint: Option<PathBuf>,
    default_args: Vec<String>,
    env: Vec<(String, String)>,
    commands: BTreeMap<String, PathBuf>,
    host_commands: bool,
}

/// A resolved command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Invocation {
    pub(crate) program: PathBuf,
    pub(crate) arg0: String,
    pub(crate) args: Vec<String>,
}

impl ImageTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `program` for every image whose reference starts with `image_prefix`.
    pub fn map(mut self, image_prefix: impl Into<String>, program: Program) -> Self {
        self.entries.push((image_prefix.into(), program));
        self
    }

    /// Maps the conformance suite's echo-basic images ([`ECHO_BASIC_IMAGES`]) to the binary
    /// `tests/k8s/build.sh` builds. Fails, naming the build script, when it is missing.
    pub fn echo_basic(self) -> Result<Self> {
        let binary = crate::artifacts::echo_basic()?;
        Ok(ECHO_BASIC_IMAGES.iter().fold(self, |table, image| {
            table.map(*image, Program::new(&binary))
        }))
    }

    pub(crate) fn lookup(&self, image: &str) -> Option<&Program> {
        self.entries
            .iter()
            .filter(|(prefix, _)| image.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())
            .map(|(_, program)| program)
    }

    /// The prefixes, for messages.
    pub(crate) fn prefixes(&self) -> String {
        if self.entries.is_empty() {
            return "the table is empty".to_owned();
        }
        let prefixes: Vec<&str> = self.entries.iter().map(|(p, _)| p.as_str()).collect();
        format!("it maps {}", prefixes.join(", "))
    }
}

impl Program {
    /// An image whose entrypoint is the executable at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            entrypoint: Some(path.into()),
            ..Self::default()
        }
    }

    /// An image without entrypoint whose `command` runs programs of the host (like a
    /// distribution's base image: `command: ["cat", "/etc/config/key"]`).
    pub fn host_commands() -> Self {
        Self::default().allow_host_commands()
    }

    /// The default arguments (the image's `CMD`), used when a container sets neither
    /// `command` nor `args`.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.default_args = args.into_iter().map(Into::into).collect();
        self
    }

    /// An environment variable of the image (the container's `env` overrides it).
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// `command: [name, ...]` runs the executable at `path`.
    pub fn command(mut self, name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        self.commands.insert(name.into(), path.into());
        self
    }

    /// `command[0]` may also be any absolute path or name on the host's `PATH`.
    pub fn allow_host_commands(mut self) -> Self {
        self.host_commands = true;
        self
    }

    pub(crate) fn image_env(&self) -> &[(String, String)] {
        &self.env
    }

    /// The command line for a container's `command` and `args` (already expanded).
    pub(crate) fn invocation(
        &self,
        command: &[String],
        args: &[String],
    ) -> std::result::Result<Invocation, String> {
        let Some((first, rest)) = command.split_first() else {
            let entrypoint = self.entrypoint.as_ref().ok_or(
                "the image has no entrypoint in the image table: the container must set `command`",
            )?;
            let args = if args.is_empty() {
                self.default_args.clone()
            } else {
                args.to_vec()
            };
            return Ok(Invocation {
                program: entrypoint.clone(),
                arg0: entrypoint.display().to_string(),
                args,
            });
        };
        let program = self.resolve(first).ok_or_else(|| {
            format!(
                "command {first:?} is not provided by the image table's program (entrypoint {:?}, commands {:?}, host commands {})",
                self.entrypoint,
                self.commands.keys().collect::<Vec<_>>(),
                if self.host_commands { "allowed but not found" } else { "not allowed" },
            )
        })?;
        Ok(Invocation {
            program,
            arg0: first.clone(),
            args: rest.iter().chain(args).cloned().collect(),
        })
    }

    fn resolve(&self, name: &str) -> Option<PathBuf> {
        if let Some(entrypoint) = &self.entrypoint {
            if Path::new(name) == entrypoint.as_path()
                || entrypoint.file_name().is_some_and(|f| f == name)
            {
                return Some(entrypoint.clone());
            }
        }
        if let Some(path) = self.commands.get(name) {
            return Some(path.clone());
        }
        if !self.host_commands {
            return None;
        }
        if name.starts_with('/') {
            return Path::new(name).is_file().then(|| PathBuf::from(name));
        }
        std::env::var_os("PATH")
            .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn longest_prefix_wins() {
        let table = ImageTable::new()
            .map("example.com/", Program::new("/bin/a"))
            .map("example.com/echo", Program::new("/bin/b"));
        let program = table.lookup("example.com/echo:v1").expect("mapped");
        assert_eq!(program.entrypoint.as_deref(), Some(Path::new("/bin/b")));
        assert!(table.lookup("other.io/echo").is_none());
        assert!(table.prefixes().contains("example.com/echo"));
    }

    #[test]
    fn command_and_args_map_like_entrypoint_and_cmd() {
        let program = Program::new("/opt/echo").args(["--default"]);
        let run = |c: &[&str], a: &[&str]| program.invocation(&strings(c), &strings(a));
        assert_eq!(run(&[], &[]).unwrap().args, strings(&["--default"]));
        assert_eq!(run(&[], &["-x"]).unwrap().args, strings(&["-x"]));
        let by_name = run(&["echo", "-a"], &["-b"]).unwrap();
        assert_eq!(by_name.program, Path::new("/opt/echo"));
        assert_eq!(by_name.args, strings(&["-a", "-b"]));
        assert!(run(&["cat"], &[]).unwrap_err().contains("\"cat\""));
    }

    #[test]
    fn host_commands_resolve_on_path() {
        let program = Program::host_commands();
        let cat = program.invocation(&strings(&["cat", "/x"]), &[]).unwrap();
        assert!(cat.program.ends_with("cat"), "{cat:?}");
        assert_eq!(cat.arg0, "cat");
        assert!(program.invocation(&[], &[]).is_err());
        assert!(program
            .invocation(&strings(&["no-such-program-here"]), &[])
            .is_err());
    }
}
