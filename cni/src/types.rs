//! The CNI result (spec 1.0.0 / 1.1.0, "Success"; 0.3.x / 0.4.0 results add
//! `version` to each IP). Fields this plugin does not read are kept in
//! `extra`, so a `prevResult` passes through a chain unchanged.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniResult {
    #[serde(default)]
    pub cni_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub dns: Map<String, Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// CNI 1.1.0 only (removed when the result is for an older version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpConfig {
    /// CIDR notation: `10.244.1.5/24`.
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
    /// `"4"` / `"6"`: results of CNI versions before 1.0.0 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    pub dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl CniResult {
    /// Rewrites the result into the shape of `version` (the `version` field
    /// of IPs before 1.0.0, interface MTU only from 1.1.0).
    pub fn convert_to(&mut self, version: &str) {
        self.cni_version = version.to_string();
        let pre_1 = version.starts_with("0.");
        for ip in &mut self.ips {
            ip.version = if pre_1 {
                Some(if ip.address.contains(':') { "6" } else { "4" }.to_string())
            } else {
                None
            };
        }
        if version != "1.1.0" {
            for i in &mut self.interfaces {
                i.mtu = None;
            }
        }
    }
}
