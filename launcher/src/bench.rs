//! placeholder until the bench module lands (replaced in this session).
pub fn run(_a: &crate::cli::BenchArgs) -> anyhow::Result<i32> {
    anyhow::bail!("k3shim bench: not built yet")
}
