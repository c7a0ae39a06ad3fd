//! Input files: plain or gzip (detected by magic bytes), hashed (BLAKE3 of the bytes on disk) while
//! they are read, and cut into blocks of whole lines for parallel parsing.

use crate::error::{Error, Result};
use flate2::read::MultiGzDecoder;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What `meta.json` records of each input file.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SourceInfo {
    pub path: String,
    pub bytes: u64,
    /// BLAKE3 of the file as stored (`b3sum FILE` prints the same).
    pub blake3: String,
}

#[derive(Default)]
struct HashState {
    hasher: blake3::Hasher,
}

struct HashingReader {
    file: File,
    state: Arc<Mutex<HashState>>,
    bytes: Arc<AtomicU64>,
}

impl Read for HashingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        self.state.lock().unwrap_or_else(|e| e.into_inner()).hasher.update(&buf[..n]);
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// One line-aligned piece of a file; `first_line` is 1-based.
pub struct Block {
    pub data: Vec<u8>,
    pub first_line: u64,
}

impl Block {
    /// The block's non-blank lines with their line numbers, without `\n` / `\r\n`.
    pub fn lines(&self) -> Lines<'_> {
        Lines { data: &self.data, pos: 0, line_no: self.first_line }
    }
}

/// Iterator over a block's non-blank lines (see [`Block::lines`]).
pub struct Lines<'a> {
    data: &'a [u8],
    pos: usize,
    line_no: u64,
}

impl<'a> Iterator for Lines<'a> {
    type Item = (u64, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        while self.pos < self.data.len() {
            let rest = &self.data[self.pos..];
            let len = memchr::memchr(b'\n', rest).unwrap_or(rest.len());
            let line = &rest[..len];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let line_no = self.line_no;
            self.pos += len + 1;
            self.line_no += 1;
            if !line.iter().all(u8::is_ascii_whitespace) {
                return Some((line_no, line));
            }
        }
        None
    }
}

pub struct InputFile {
    pub path: String,
    pub size: u64,
    inner: Box<dyn Read + Send>,
    state: Arc<Mutex<HashState>>,
    bytes: Arc<AtomicU64>,
    carry: Vec<u8>,
    next_line: u64,
    eof: bool,
}

impl InputFile {
    pub fn open(path: &str) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let size = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let mut magic = [0u8; 2];
        let gz = {
            let mut probe = File::open(path).map_err(|e| Error::io(path, e))?;
            probe.read(&mut magic).map_err(|e| Error::io(path, e))? == 2 && magic == [0x1f, 0x8b]
        };
        let state = Arc::new(Mutex::new(HashState::default()));
        let bytes = Arc::new(AtomicU64::new(0));
        let raw = HashingReader { file, state: state.clone(), bytes: bytes.clone() };
        // Plain files are read straight into the block buffer; gzip needs a buffered source.
        let inner: Box<dyn Read + Send> =
            if gz { Box::new(MultiGzDecoder::new(BufReader::with_capacity(1 << 20, raw))) } else { Box::new(raw) };
        Ok(InputFile { path: path.to_string(), size, inner, state, bytes, carry: Vec::new(), next_line: 1, eof: false })
    }

    /// Bytes of the file on disk consumed so far (for progress).
    pub fn bytes_read(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// A shared counter of [`Self::bytes_read`], readable while another thread reads the file.
    pub fn bytes_counter(&self) -> Arc<AtomicU64> {
        self.bytes.clone()
    }

    fn fill(&mut self, want: usize) -> Result<()> {
        if self.eof || self.carry.len() >= want {
            return Ok(());
        }
        // read_to_end through `take` reads into the spare capacity without zeroing it first.
        let need = (want - self.carry.len()) as u64;
        let n = (&mut self.inner).take(need).read_to_end(&mut self.carry).map_err(|e| Error::io(&self.path, e))?;
        if (n as u64) < need {
            self.eof = true;
        }
        Ok(())
    }

    /// The next block of about `target` bytes ending at a line end; `None` at the end of the file.
    pub fn next_block(&mut self, target: usize) -> Result<Option<Block>> {
        self.next_block_reusing(target, Vec::new())
    }

    /// As [`Self::next_block`], filling `spare` (a used block buffer) rather than fresh memory.
    pub fn next_block_reusing(&mut self, target: usize, mut spare: Vec<u8>) -> Result<Option<Block>> {
        self.fill(target)?;
        let cut = loop {
            if self.eof {
                break self.carry.len();
            }
            if let Some(i) = memchr::memrchr(b'\n', &self.carry) {
                break i + 1;
            }
            // One line longer than the target: read on until it ends.
            let want = self.carry.len() * 2;
            self.fill(want)?;
        };
        if cut == 0 {
            return Ok(None);
        }
        spare.clear();
        spare.extend_from_slice(&self.carry[cut..]);
        self.carry.truncate(cut);
        let mut data = std::mem::replace(&mut self.carry, spare);
        if self.next_line == 1 && data.starts_with(b"\xEF\xBB\xBF") {
            data.drain(..3); // UTF-8 byte-order mark
        }
        let first_line = self.next_line;
        self.next_line += memchr::memchr_iter(b'\n', &data).count() as u64;
        if !data.ends_with(b"\n") {
            self.next_line += 1;
        }
        Ok(Some(Block { data, first_line }))
    }

    /// Reads to the end (so the hash covers the whole file) and returns what meta.json records.
    pub fn finish(mut self) -> Result<SourceInfo> {
        let mut sink = [0u8; 1 << 16];
        while self.inner.read(&mut sink).map_err(|e| Error::io(&self.path, e))? > 0 {}
        let st = std::mem::take(&mut *self.state.lock().unwrap_or_else(|e| e.into_inner()));
        let blake3 = st.hasher.finalize().to_hex().to_string();
        Ok(SourceInfo { bytes: self.bytes_read(), path: self.path, blake3 })
    }
}

/// Reads the first `n` non-blank lines of a file (decompressed), for format detection and headers.
pub fn head_lines(path: &str, n: usize) -> Result<Vec<Vec<u8>>> {
    let mut f = InputFile::open(path)?;
    let mut out = Vec::new();
    while let Some(block) = f.next_block(1 << 16)? {
        for (_, l) in block.lines() {
            out.push(l.to_vec());
            if out.len() == n {
                return Ok(out);
            }
        }
    }
    Ok(out)
}

/// The 1-based line and column of the first invalid UTF-8 byte in `data`, if any.
pub fn utf8_error_in(line: &[u8]) -> Option<String> {
    std::str::from_utf8(line).err().map(|e| {
        let at = e.valid_up_to();
        format!("not valid UTF-8 (byte 0x{:02X} at column {})", line[at], at + 1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn blocks_keep_line_numbers_and_hash() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.txt");
        let text: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&p, &text).unwrap();
        let mut f = InputFile::open(p.to_str().unwrap()).unwrap();
        let mut seen = Vec::new();
        while let Some(b) = f.next_block(100).unwrap() {
            for (n, l) in b.lines() {
                seen.push((n, String::from_utf8(l.to_vec()).unwrap()));
            }
        }
        assert_eq!(seen.len(), 1000);
        assert!(seen.iter().all(|(n, l)| *l == format!("line {}", n - 1)));
        let info = f.finish().unwrap();
        assert_eq!(info.bytes, text.len() as u64);
        assert_eq!(info.blake3, blake3::hash(text.as_bytes()).to_hex().to_string());
    }

    #[test]
    fn gzip_is_transparent() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(b"a\nb\r\n\nc").unwrap();
        std::fs::write(&p, enc.finish().unwrap()).unwrap();
        let lines = head_lines(p.to_str().unwrap(), 10).unwrap();
        assert_eq!(lines, vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
    }
}
