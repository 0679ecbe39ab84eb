//! placeholder until the experiment module lands (replaced in this session).
pub fn run(_a: &crate::cli::ExperimentArgs) -> anyhow::Result<i32> {
    anyhow::bail!("k3shim experiment: not built yet")
}
