//! Reads interaction files into one [`RawLog`]: blocks of lines are parsed in parallel, each with its
//! own id interner, and merged in file order, so the result never depends on the thread count.

use crate::error::{Error, Result};
use crate::formats::{self, Chunk, ColumnSpec, Format, RecordParser, MAX_BAD_EXAMPLES};
use crate::intern::Interner;
use crate::reader::{head_lines, utf8_error_in, Block, InputFile, SourceInfo};
use rayon::prelude::*;

use crate::Progress;

/// All interactions in input order, ids interned in order of first appearance.
#[derive(Default, Debug)]
pub struct RawLog {
    pub users: Vec<u32>,
    pub items: Vec<u32>,
    pub times: Option<Vec<i64>>,
    pub ratings: Option<Vec<f32>>,
    pub user_keys: Interner,
    pub item_keys: Interner,
    pub format: Option<&'static str>,
    pub skipped_lines: u64,
    /// The first few skipped lines, as `file:line: problem`.
    pub bad_lines: Vec<String>,
    pub sources: Vec<SourceInfo>,
}

#[derive(Clone, Debug)]
pub struct IngestOptions {
    pub format: Option<Format>,
    pub columns: ColumnSpec,
    pub skip_bad_lines: bool,
    /// Bytes per parse block: 1 MiB measured fastest here (a block and its rows stay in cache).
    pub block_bytes: usize,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions { format: None, columns: ColumnSpec::default(), skip_bad_lines: false, block_bytes: 1 << 20 }
    }
}

impl RawLog {
    fn merge(&mut self, c: &mut Chunk) {
        self.user_keys.intern_rows(&c.users, &c.user_keys, &mut self.users);
        self.item_keys.intern_rows(&c.items, &c.item_keys, &mut self.items);
        if let Some(t) = &mut self.times {
            t.extend_from_slice(&c.times);
        }
        if let Some(r) = &mut self.ratings {
            r.extend_from_slice(&c.ratings);
        }
        self.skipped_lines += c.skipped;
        let room = MAX_BAD_EXAMPLES.saturating_sub(self.bad_lines.len());
        self.bad_lines.extend(c.bad_lines.drain(..).take(room));
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

pub fn ingest(paths: &[String], opts: &IngestOptions, progress: Progress) -> Result<RawLog> {
    if paths.is_empty() {
        return Err(Error::Input("no input files given".into()));
    }
    let total: u64 = paths.iter().map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)).sum();
    let mut done_before = 0u64;
    let mut log = RawLog::default();
    for (file_index, path) in paths.iter().enumerate() {
        let parser = open_parser(path, opts, file_index == 0, &mut log)?;
        let rows_before = log.len() as u64 + log.skipped_lines;
        let mut file_progress = |done: u64| progress("read", done_before + done, total);
        let file = read_file(path, parser.as_ref(), opts, &mut log, &mut file_progress)?;
        if log.len() as u64 + log.skipped_lines == rows_before {
            let why = if parser.header_lines() > 0 { "has a header but no data lines" } else { "has no data lines" };
            return Err(Error::Input(format!("{path}: the file {why}")));
        }
        let info = file.finish()?;
        done_before += info.bytes;
        log.sources.push(info);
    }
    if log.user_keys.len() >= u32::MAX as usize || log.item_keys.len() >= u32::MAX as usize {
        return Err(Error::Input("more than 4 billion distinct user or item ids do not fit".into()));
    }
    if log.is_empty() {
        return Err(Error::Input(format!("no valid interactions: all {} lines were skipped", log.skipped_lines)));
    }
    Ok(log)
}

/// The parser of one input file: its format (given or detected) read from its first line. The first
/// file sets which columns (timestamps, ratings) the log has; every later one must have the same.
fn open_parser(path: &str, opts: &IngestOptions, first_file: bool, log: &mut RawLog) -> Result<Box<dyn RecordParser>> {
    let head = head_lines(path, 100)?;
    let format = match opts.format {
        Some(f) => f,
        None => formats::detect(path, &head)?,
    };
    let first = head.first().ok_or_else(|| Error::Input(format!("{path}: the file is empty")))?;
    if let Some(e) = utf8_error_in(first) {
        return Err(Error::Parse { file: path.to_string(), line: 1, msg: e });
    }
    let parser = formats::parser_for(format, path, first, &opts.columns)?;
    if first_file {
        log.format = Some(format.name());
        log.times = parser.has_time().then(Vec::new);
        log.ratings = parser.has_rating().then(Vec::new);
    } else if log.times.is_some() != parser.has_time() || log.ratings.is_some() != parser.has_rating() {
        return Err(Error::Input(format!(
            "{path}: its columns (timestamp: {}, rating: {}) differ from the first input's",
            parser.has_time(),
            parser.has_rating()
        )));
    }
    Ok(parser)
}

/// Reads one file into `log`: a reader thread does the I/O, decompression and hashing; blocks are
/// parsed in parallel in batches, and each batch is merged (in file order) while the next one is
/// parsed. `progress(bytes read)` returns false to cancel. Returns the file, for its checksums.
fn read_file(
    path: &str,
    parser: &dyn RecordParser,
    opts: &IngestOptions,
    log: &mut RawLog,
    progress: &mut dyn FnMut(u64) -> bool,
) -> Result<InputFile> {
    let batch = 2 * rayon::current_num_threads().max(1);
    let file = InputFile::open(path)?;
    let bytes_read = file.bytes_counter();
    // A reader thread does the I/O, decompression and hashing; blocks are parsed in parallel in
    // batches, and each batch is merged (in file order) while the next one is parsed.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Block>>(batch);
    // Used block buffers and chunks go back for reuse: fresh memory costs page faults.
    let (spare_tx, spare_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let mut spare_chunks: Vec<Chunk> = Vec::new();
    let block_bytes = opts.block_bytes;
    let file = std::thread::scope(|scope| -> Result<InputFile> {
        let reader = scope.spawn(move || {
            let mut file = file;
            loop {
                let next = file.next_block_reusing(block_bytes, spare_rx.try_recv().unwrap_or_default());
                let end = !matches!(next, Ok(Some(_)));
                if let Some(b) = next.transpose() {
                    if tx.send(b).is_err() {
                        break;
                    }
                }
                if end {
                    break;
                }
            }
            file
        });
        let mut header_to_skip = parser.header_lines();
        let mut parsed: Vec<Chunk> = Vec::new();
        loop {
            let mut blocks = Vec::with_capacity(batch);
            while blocks.len() < batch {
                match rx.recv() {
                    Ok(block) => blocks.push(block?),
                    Err(_) => break,
                }
            }
            if blocks.is_empty() && parsed.is_empty() {
                break;
            }
            let skip = std::mem::take(&mut header_to_skip);
            let fresh: Vec<Chunk> = (0..blocks.len()).map(|_| spare_chunks.pop().unwrap_or_default()).collect();
            let (_, next) = rayon::join(
                || parsed.iter_mut().for_each(|c| log.merge(c)),
                || {
                    blocks
                        .par_iter()
                        .zip(fresh)
                        .enumerate()
                        .map(|(i, (b, chunk))| {
                            let skip = if i == 0 { skip } else { 0 };
                            let mut chunk = chunk;
                            chunk.reset();
                            parser.parse_block(b, &mut chunk, skip, path, opts.skip_bad_lines).map(|_| chunk)
                        })
                        .collect::<Result<Vec<Chunk>>>()
                },
            );
            spare_chunks.append(&mut parsed);
            parsed = next?;
            for b in blocks {
                spare_tx.send(b.data).unwrap_or(()); // the reader may have finished
            }
            if !progress(bytes_read.load(std::sync::atomic::Ordering::Relaxed)) {
                return Err(Error::Cancelled);
            }
        }
        drop(rx);
        reader.join().map_err(|_| Error::Input(format!("{path}: the reader thread failed")))
    })?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &tempfile::TempDir, name: &str, text: &[u8]) -> String {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    }

    #[test]
    fn small_blocks_give_the_same_log() {
        let dir = tempfile::tempdir().unwrap();
        let text: String = (0..5000).map(|i| format!("u{},i{},{}\n", i % 37, i % 101, i)).collect();
        let p = write(&dir, "x.csv", format!("user,item,time\n{text}").as_bytes());
        let mut noop = |_: &str, _: u64, _: u64| true;
        let big = ingest(std::slice::from_ref(&p), &IngestOptions::default(), &mut noop).unwrap();
        let small_opts = IngestOptions { block_bytes: 64, ..Default::default() };
        let small = ingest(&[p], &small_opts, &mut noop).unwrap();
        assert_eq!(big.len(), 5000);
        assert_eq!(big.users, small.users);
        assert_eq!(big.items, small.items);
        assert_eq!(big.times, small.times);
        assert_eq!(big.user_keys.order(), small.user_keys.order());
    }

    #[test]
    fn errors_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, "x.csv", b"user,item\na,b\nc\n");
        let mut noop = |_: &str, _: u64, _: u64| true;
        let e = ingest(std::slice::from_ref(&p), &IngestOptions::default(), &mut noop).unwrap_err().to_string();
        assert!(e.ends_with("x.csv:3: missing columns: expected 2 fields, found 1"), "{e}");
        let opts = IngestOptions { skip_bad_lines: true, ..Default::default() };
        let log = ingest(&[p], &opts, &mut noop).unwrap();
        assert_eq!((log.len(), log.skipped_lines), (1, 1));
        let p = write(&dir, "h.csv", b"user,item\n");
        let e = ingest(&[p], &IngestOptions::default(), &mut noop).unwrap_err().to_string();
        assert!(e.contains("header but no data"), "{e}");
        let p = write(&dir, "bad.tsv", b"user\titem\nab\t\xff\xfe\n");
        let e = ingest(&[p], &IngestOptions::default(), &mut noop).unwrap_err().to_string();
        assert!(e.contains("bad.tsv:2: not valid UTF-8"), "{e}");
    }
}
