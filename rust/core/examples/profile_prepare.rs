//! Times each stage of a prepare run, for profiling the core without Python:
//! `cargo run --release -p llmesr-core --example profile_prepare -- FILE.csv [MIN_CORE]`
use llmesr_core::dataset::{self, Filters};
use llmesr_core::ingest::{self, IngestOptions};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args.first().expect("usage: profile_prepare FILE [MIN_CORE]").clone();
    let k: u32 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    let t = Instant::now();
    let block_bytes =
        std::env::var("BLOCK_KB").ok().and_then(|v| v.parse::<usize>().ok()).map_or(1 << 20, |kb| kb << 10);
    let opts = IngestOptions { block_bytes, ..Default::default() };
    let log = ingest::ingest(&[path], &opts, &mut |_, _, _| true).expect("ingest");
    let read = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let ds = dataset::build(log, &Filters { min_user: k, min_item: k, ..Default::default() }).expect("build");
    let build = t.elapsed().as_secs_f64();
    let out = std::env::temp_dir().join(format!("llmesr-profile-{}", std::process::id()));
    std::fs::create_dir_all(&out).expect("temp dir");
    let t = Instant::now();
    let prov = llmesr_core::folder::Provenance {
        version: "profile".into(),
        input_format: "csv".into(),
        sources: vec![],
        item_sources: vec![],
        settings: serde_json::Value::Null,
        skipped_lines: 0,
        skipped_examples: vec![],
    };
    llmesr_core::folder::write(&out, &ds, &Default::default(), prov).expect("write");
    let write = t.elapsed().as_secs_f64();
    std::fs::remove_dir_all(&out).ok();
    println!(
        "read {read:.3} build {build:.3} write {write:.3} total {:.3} ({} interactions)",
        read + build + write,
        ds.items.len()
    );
}
