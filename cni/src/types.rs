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

#[cfg(test)]
mod tests {
    use super::*;

    fn result() -> CniResult {
        serde_json::from_str(
            r#"{"cniVersion":"1.1.0","interfaces":[{"name":"eth0","mac":"0a:58:00:00:00:01","mtu":1450,"sandbox":"/run/netns/p"}],
                "ips":[{"address":"10.244.1.2/24","gateway":"10.244.1.1","interface":0},{"address":"fd00::2/64","interface":0}],
                "routes":[{"dst":"0.0.0.0/0","gw":"10.244.1.1","priority":5}],"dns":{"nameservers":["10.96.0.10"]}}"#,
        )
        .unwrap()
    }

    #[test]
    fn results_before_1_0_carry_the_ip_version_and_no_mtu() {
        let mut r = result();
        r.convert_to("0.4.0");
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["cniVersion"], "0.4.0");
        assert_eq!(v["ips"][0]["version"], "4");
        assert_eq!(v["ips"][1]["version"], "6");
        assert!(v["interfaces"][0].get("mtu").is_none());
    }

    #[test]
    fn results_of_1_1_keep_the_mtu_and_drop_the_ip_version() {
        let mut r = result();
        r.ips[0].version = Some("4".into()); // as a 0.4.0 IPAM plugin answers
        r.convert_to("1.1.0");
        let v = serde_json::to_value(&r).unwrap();
        assert!(v["ips"][0].get("version").is_none());
        assert_eq!(v["interfaces"][0]["mtu"], 1450);
        // Fields this plugin does not read pass through unchanged.
        assert_eq!(v["routes"][0]["priority"], 5);
        assert_eq!(v["dns"]["nameservers"][0], "10.96.0.10");
    }
}
