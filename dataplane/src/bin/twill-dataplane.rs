//! `twill-dataplane`: the node dataplane process (a thin binary over the library).
fn main() -> anyhow::Result<()> {
    anyhow::bail!("twill-dataplane: no subcommand implemented yet")
}
