//! The whole `llmesr-prepare` job: ingest, filter, remap, split, join item text, write the folder.

use crate::dataset::{self, Filters};
use crate::error::Result;
use crate::folder::{self, Provenance};
use crate::ingest::{self, IngestOptions};
use crate::items::{self, ItemTable};
use crate::synthetic::{self, SyntheticConfig};
use crate::Progress;
use rustc_hash::FxHashSet;
use serde_json::{json, Value};
use std::path::Path;

pub struct PrepareOptions {
    pub inputs: Vec<String>,
    pub ingest: IngestOptions,
    pub filters: Filters,
    pub item_files: Vec<String>,
    pub item_key: Option<String>,
    pub version: String,
}

/// Prepares `opts.inputs` into `out` (an existing empty folder); returns meta.json's content.
pub fn prepare(opts: &PrepareOptions, out: &Path, progress: Progress) -> Result<Value> {
    let log = ingest::ingest(&opts.inputs, &opts.ingest, progress)?;
    let input_format = log.format.unwrap_or("unknown").to_string();
    let (sources, skipped, examples) = (log.sources.clone(), log.skipped_lines, log.bad_lines.clone());
    if !progress("filter", 0, 1) {
        return Err(crate::error::Error::Cancelled);
    }
    let ds = dataset::build(log, &opts.filters)?;
    let table = if opts.item_files.is_empty() {
        ItemTable::default()
    } else {
        let wanted: FxHashSet<&str> = ds.item_ids.iter().collect();
        items::read_items(&opts.item_files, opts.item_key.as_deref(), &wanted, opts.ingest.skip_bad_lines, progress)?
    };
    if !progress("write", 0, 1) {
        return Err(crate::error::Error::Cancelled);
    }
    let settings = json!({"filters": opts.filters, "format": opts.ingest.format.map(|f| f.name()),
                          "skip_bad_lines": opts.ingest.skip_bad_lines, "item_key": opts.item_key});
    let prov = Provenance {
        version: opts.version.clone(),
        input_format,
        sources,
        item_sources: table.sources,
        settings,
        skipped_lines: skipped + table.skipped_lines,
        skipped_examples: examples,
    };
    folder::write(out, &ds, &table.meta, prov)
}

/// Generates the synthetic dataset into `out` through the same filters and writer.
pub fn prepare_synthetic(cfg: &SyntheticConfig, filters: &Filters, version: &str, out: &Path) -> Result<Value> {
    let (log, meta) = synthetic::generate(cfg).map_err(crate::error::Error::Input)?;
    let ds = dataset::build(log, filters)?;
    let prov = Provenance {
        version: version.to_string(),
        input_format: "synthetic".into(),
        sources: Vec::new(),
        item_sources: Vec::new(),
        settings: json!({"filters": filters, "synthetic": cfg}),
        skipped_lines: 0,
        skipped_examples: Vec::new(),
    };
    folder::write(out, &ds, &meta, prov)
}
