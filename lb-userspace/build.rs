//! Compiles the XDP programs (lb-ebpf, with nightly and bpf-linker) so the controller embeds
//! them: `xdplb` is one self-contained binary.
fn main() -> anyhow::Result<()> {
    // The map layouts the programs are built with live in lb-common.
    println!("cargo:rerun-if-changed=../lb-common/src");
    let lb_ebpf = aya_build::Package {
        name: "lb-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../lb-ebpf"),
        ..Default::default()
    };
    aya_build::build_ebpf([lb_ebpf], aya_build::Toolchain::default())
}
