//! IPAM delegated as the reference plugins do (libcni's `ExecPluginWithResult`):
//! the plugin the configuration names is found in CNI_PATH, run with the same
//! environment and the network configuration on stdin, and its result (or
//! its error, code and message kept) read from stdout.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command as Proc, Stdio};

use serde_json::Value;

use crate::config::{Config, Env, SUPPORTED_VERSIONS};
use crate::error::{Error, Result};
use crate::types::CniResult;

/// Finds `plugin` in CNI_PATH.
pub fn find(env: &Env, plugin: &str) -> Result<PathBuf> {
    for dir in &env.path {
        let p = PathBuf::from(dir).join(plugin);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(Error::config(format!(
        "IPAM plugin {plugin:?} not found in CNI_PATH ({})",
        env.path.join(":")
    )))
}

/// Runs `plugin` with `verb`; `Ok(stdout)` when it exits 0.
fn exec(
    path: &PathBuf,
    verb: &str,
    env: &Env,
    container_id: &str,
    ifname: &str,
    stdin: &[u8],
) -> Result<Vec<u8>> {
    let args: Vec<String> = env.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut child = Proc::new(path)
        .env("CNI_COMMAND", verb)
        .env("CNI_CONTAINERID", container_id)
        .env("CNI_NETNS", &env.netns)
        .env("CNI_IFNAME", ifname)
        .env("CNI_ARGS", args.join(";"))
        .env("CNI_PATH", env.path.join(":"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            Error::new(
                crate::error::code::IO_FAILURE,
                format!("cannot run IPAM plugin {}: {e}", path.display()),
            )
        })?;
    if let Some(mut i) = child.stdin.take() {
        // A plugin that exits without reading stdin is reported by its status.
        let _ = i.write_all(stdin);
    }
    let out = child.wait_with_output().map_err(|e| {
        Error::new(
            crate::error::code::IO_FAILURE,
            format!("IPAM plugin {}: {e}", path.display()),
        )
    })?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // The delegate's own CNI error, code kept.
    if let Ok(Value::Object(e)) = serde_json::from_slice::<Value>(&out.stdout) {
        let code = e.get("code").and_then(Value::as_u64).unwrap_or(999);
        let msg = e.get("msg").and_then(Value::as_str).unwrap_or("");
        let details = e.get("details").and_then(Value::as_str).unwrap_or("");
        return Err(Error::new(
            u32::try_from(code).unwrap_or(999),
            format!("IPAM plugin {name} failed on {verb}: {msg}"),
        )
        .with_details(details));
    }
    Err(Error::new(
        999,
        format!(
            "IPAM plugin {name} failed on {verb} ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    ))
}

/// The CNI version to speak to the IPAM plugin: ours if it knows it, else
/// the newest it knows that we know (results of 0.3.0..=1.1.0 convert).
fn negotiate(path: &PathBuf, env: &Env, ours: &str) -> Result<String> {
    let q = serde_json::json!({ "cniVersion": ours }).to_string();
    let out = exec(path, "VERSION", env, "", "", q.as_bytes())?;
    let v: Value = serde_json::from_slice(&out)
        .map_err(|e| Error::decode(format!("IPAM plugin VERSION answer: {e}")))?;
    let theirs: Vec<&str> = v
        .get("supportedVersions")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if theirs.contains(&ours) {
        return Ok(ours.to_string());
    }
    SUPPORTED_VERSIONS
        .iter()
        .rev()
        .find(|v| theirs.contains(v))
        .map(|v| v.to_string())
        .ok_or_else(|| {
            Error::version(format!(
                "IPAM plugin supports none of twill's CNI versions (it has {theirs:?})"
            ))
        })
}

pub struct Ipam {
    path: PathBuf,
    version: String,
    pub name: String,
}

impl Ipam {
    pub fn new(cfg: &Config, env: &Env) -> Result<Ipam> {
        env.require_path()?;
        let name = cfg.ipam_type();
        let path = find(env, &name)?;
        let version = negotiate(&path, env, cfg.version())?;
        Ok(Ipam {
            path,
            version,
            name,
        })
    }

    fn stdin(&self, cfg: &Config, prev: Option<&CniResult>) -> Vec<u8> {
        let mut v = cfg.ipam_conf(&self.version);
        if let Some(p) = prev {
            let mut p = p.clone();
            p.convert_to(&self.version);
            v["prevResult"] = serde_json::to_value(p).unwrap_or(Value::Null);
        } else if let Value::Object(m) = &mut v {
            m.remove("prevResult");
        }
        v.to_string().into_bytes()
    }

    pub fn add(&self, cfg: &Config, env: &Env) -> Result<CniResult> {
        let out = exec(
            &self.path,
            "ADD",
            env,
            &env.container_id,
            &env.ifname,
            &self.stdin(cfg, None),
        )?;
        serde_json::from_slice(&out)
            .map_err(|e| Error::decode(format!("IPAM plugin {} result: {e}", self.name)))
    }

    pub fn del(&self, cfg: &Config, env: &Env, container_id: &str, ifname: &str) -> Result<()> {
        exec(
            &self.path,
            "DEL",
            env,
            container_id,
            ifname,
            &self.stdin(cfg, None),
        )
        .map(drop)
    }

    pub fn check(&self, cfg: &Config, env: &Env, prev: &CniResult) -> Result<()> {
        if self.version.starts_with("0.3") {
            return Ok(()); // CHECK arrived with 0.4.0
        }
        exec(
            &self.path,
            "CHECK",
            env,
            &env.container_id,
            &env.ifname,
            &self.stdin(cfg, Some(prev)),
        )
        .map(drop)
    }

    pub fn speaks_1_1(&self) -> bool {
        self.version == "1.1.0"
    }

    /// STATUS of a 1.1.0 delegate.
    pub fn status(&self, cfg: &Config, env: &Env) -> Result<()> {
        exec(&self.path, "STATUS", env, "", "", &self.stdin(cfg, None)).map(drop)
    }

    /// GC of a 1.1.0 delegate (the valid attachments are in the config).
    pub fn gc(&self, cfg: &Config, env: &Env) -> Result<()> {
        exec(&self.path, "GC", env, "", "", &self.stdin(cfg, None)).map(drop)
    }
}
