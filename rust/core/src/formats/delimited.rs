//! Delimited text: CSV/TSV with a header, RecBole `.inter`, MovieLens `u.data` / `ratings.dat`,
//! the original LLM-ESR `inter.txt`, and sequence-per-line files.

use super::{check_id, parse_rating, parse_time, Chunk, ColumnSpec, RecordParser};
use crate::intern::{numeric_id, RawId, TextInterner};
use crate::swar;
use std::borrow::Cow;

#[derive(Clone, Copy, Debug)]
pub enum Sep {
    Byte(u8),
    Whitespace,
    DoubleColon,
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !first.is_ascii_whitespace() {
            break;
        }
        s = rest;
    }
    while let [rest @ .., last] = s {
        if !last.is_ascii_whitespace() {
            break;
        }
        s = rest;
    }
    s
}

/// Calls `f(index, field)` for every field of `line`; returns the number of fields. With `quoted`,
/// RFC 4180 quoting within one line is understood (`"a,b"`, `"say ""hi"""`).
pub fn for_each_field<'a>(
    line: &'a [u8],
    sep: Sep,
    quoted: bool,
    mut f: impl FnMut(usize, Cow<'a, [u8]>),
) -> Result<usize, String> {
    let mut n = 0;
    match sep {
        Sep::Whitespace => {
            for tok in line.split(u8::is_ascii_whitespace).filter(|t| !t.is_empty()) {
                f(n, Cow::Borrowed(tok));
                n += 1;
            }
        }
        Sep::DoubleColon => {
            let mut rest = line;
            loop {
                match memchr::memmem::find(rest, b"::") {
                    Some(i) => {
                        f(n, Cow::Borrowed(trim(&rest[..i])));
                        rest = &rest[i + 2..];
                    }
                    None => {
                        f(n, Cow::Borrowed(trim(rest)));
                        break;
                    }
                }
                n += 1;
            }
            n += 1;
        }
        Sep::Byte(b) if !quoted || memchr::memchr(b'"', line).is_none() => {
            let mut start = 0;
            for end in memchr::memchr_iter(b, line).chain(std::iter::once(line.len())) {
                f(n, Cow::Borrowed(trim(&line[start..end])));
                start = end + 1;
                n += 1;
            }
        }
        Sep::Byte(b) => {
            let mut i = 0;
            loop {
                while i < line.len() && line[i] == b' ' {
                    i += 1;
                }
                if line.get(i) == Some(&b'"') {
                    let mut field = Vec::new();
                    i += 1;
                    loop {
                        match memchr::memchr(b'"', &line[i..]) {
                            None => return Err(format!("unterminated quoted field {}", n + 1)),
                            Some(j) => {
                                field.extend_from_slice(&line[i..i + j]);
                                i += j + 1;
                                if line.get(i) == Some(&b'"') {
                                    field.push(b'"');
                                    i += 1;
                                } else {
                                    break;
                                }
                            }
                        }
                    }
                    while i < line.len() && line[i] == b' ' {
                        i += 1;
                    }
                    if i < line.len() && line[i] != b {
                        return Err(format!("text after the closing quote of field {}", n + 1));
                    }
                    f(n, Cow::Owned(field));
                } else {
                    let end = memchr::memchr(b, &line[i..]).map_or(line.len(), |j| i + j);
                    f(n, Cow::Borrowed(trim(&line[i..end])));
                    i = end;
                }
                n += 1;
                if i >= line.len() {
                    break;
                }
                i += 1; // the separator
                if i == line.len() {
                    f(n, Cow::Borrowed(&line[i..]));
                    n += 1;
                    break;
                }
            }
        }
    }
    Ok(n)
}

/// All fields of a line, owned (headers, tests).
pub fn split_fields(line: &[u8], sep: Sep, quoted: bool) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    for_each_field(line, sep, quoted, |_, f| out.push(f.into_owned()))?;
    Ok(out)
}

const USER_NAMES: &[&str] = &["user_id", "userid", "user", "uid", "reviewerid", "visitorid", "customer_id"];
const ITEM_NAMES: &[&str] =
    &["item_id", "itemid", "item", "iid", "movieid", "movie_id", "asin", "parent_asin", "business_id", "product_id"];
const TIME_NAMES: &[&str] = &["timestamp", "time", "ts", "unixreviewtime", "date", "datetime"];
const RATING_NAMES: &[&str] = &["rating", "overall", "stars", "score"];

/// One column per role; `time` and `rating` optional.
pub struct Delimited {
    sep: Sep,
    quoted: bool,
    header: bool,
    ncols: usize,
    user: usize,
    item: usize,
    time: Option<usize>,
    rating: Option<usize>,
    integer_ids: bool,
}

impl Delimited {
    pub fn from_header(sep: Sep, quoted: bool, first_line: &[u8], spec: &ColumnSpec) -> Result<Self, String> {
        if let Some(roles) = &spec.positional {
            let find = |role: &str| roles.iter().position(|r| r == role);
            let (user, item) = match (find("user"), find("item")) {
                (Some(u), Some(i)) => (u, i),
                _ => return Err("--columns must name a 'user' and an 'item' column".into()),
            };
            if let Some(bad) = roles.iter().find(|r| !["user", "item", "time", "rating", "-"].contains(&r.as_str())) {
                return Err(format!("unknown column role '{bad}' in --columns (use user, item, time, rating or -)"));
            }
            let (time, rating) = (find("time"), find("rating"));
            return Ok(Delimited {
                sep,
                quoted,
                header: false,
                ncols: roles.len(),
                user,
                item,
                time,
                rating,
                integer_ids: false,
            });
        }
        let names: Vec<String> = split_fields(first_line, sep, quoted)?
            .iter()
            .map(|f| {
                let s = String::from_utf8_lossy(f);
                // RecBole headers carry types: `user_id:token`.
                s.split(':').next().unwrap_or("").trim().to_lowercase()
            })
            .collect();
        let pick = |given: &Option<String>,
                    candidates: &[&str],
                    role: &str,
                    flag: &str|
         -> Result<Option<usize>, String> {
            match given {
                Some(g) => names
                    .iter()
                    .position(|n| *n == g.to_lowercase())
                    .map(Some)
                    .ok_or_else(|| format!("no column '{g}' in the header {names:?} (given with {flag})")),
                None => Ok(candidates.iter().find_map(|c| names.iter().position(|n| n == c)))
                    .and_then(|found| match (found, role) {
                        (None, "user" | "item") => Err(format!(
                            "no {role} column in the header {names:?}: name it with {flag}, or use --columns for a file without a header"
                        )),
                        (f, _) => Ok(f),
                    }),
            }
        };
        let user = pick(&spec.user, USER_NAMES, "user", "--user-col")?.unwrap_or(0);
        let item = pick(&spec.item, ITEM_NAMES, "item", "--item-col")?.unwrap_or(0);
        let time = pick(&spec.time, TIME_NAMES, "time", "--time-col")?;
        let rating = pick(&spec.rating, RATING_NAMES, "rating", "--rating-col")?;
        // A column chosen by a name the header repeats is ambiguous: refuse rather than guess.
        for col in [Some(user), Some(item), time, rating].into_iter().flatten() {
            let name = &names[col];
            let same: Vec<usize> = (0..names.len()).filter(|&c| names[c] == *name).map(|c| c + 1).collect();
            if same.len() > 1 {
                return Err(format!(
                    "the header names column '{name}' {} times (columns {same:?}): rename all but one",
                    same.len()
                ));
            }
        }
        Ok(Delimited { sep, quoted, header: true, ncols: names.len(), user, item, time, rating, integer_ids: false })
    }

    pub fn movielens(sep: Sep) -> Self {
        Delimited {
            sep,
            quoted: false,
            header: false,
            ncols: 4,
            user: 0,
            item: 1,
            time: Some(3),
            rating: Some(2),
            integer_ids: true,
        }
    }

    pub fn llmesr() -> Self {
        Delimited {
            sep: Sep::Whitespace,
            quoted: false,
            header: false,
            ncols: 2,
            user: 0,
            item: 1,
            time: None,
            rating: None,
            integer_ids: true,
        }
    }
}

impl RecordParser for Delimited {
    fn has_time(&self) -> bool {
        self.time.is_some()
    }
    fn has_rating(&self) -> bool {
        self.rating.is_some()
    }
    fn header_lines(&self) -> usize {
        usize::from(self.header)
    }
    fn parse(&self, line: &[u8], out: &mut Chunk) -> Result<(), String> {
        if let Sep::Byte(sep) = self.sep {
            if let Some(done) = self.parse_fast(line, sep, out) {
                return done;
            }
        }
        self.parse_general(line, out)
    }
}

impl Delimited {
    /// Any separator, quoted fields: the reference the fast path is tested against.
    fn parse_general(&self, line: &[u8], out: &mut Chunk) -> Result<(), String> {
        let (mut user, mut item, mut time, mut rating) = (None, None, None, None);
        let n = for_each_field(line, self.sep, self.quoted, |i, f| {
            if i == self.user {
                user = Some(f);
            } else if i == self.item {
                item = Some(f);
            } else if Some(i) == self.time {
                time = Some(f);
            } else if Some(i) == self.rating {
                rating = Some(f);
            }
        })?;
        self.check_count(n)?;
        let (user, item) = (user.unwrap_or_default(), item.unwrap_or_default());
        self.push_row(&user, &item, time.as_deref(), rating.as_deref(), out)
    }
}

const MAX_FAST_FIELDS: usize = 12;

/// An id resolved without interning (interning waits until the whole line is known to be good).
enum Id<'a> {
    Num(RawId),
    Text(&'a [u8]),
}

impl Delimited {
    /// The fast path for one separator byte: field ends are found eight bytes at a time (no
    /// per-byte branches to mispredict), then each needed field is converted once: plain digit runs
    /// eight digits at a time. `None` where the line needs the general path (quotes, many columns).
    fn parse_fast(&self, line: &[u8], sep: u8, out: &mut Chunk) -> Option<Result<(), String>> {
        if self.ncols > MAX_FAST_FIELDS {
            return None;
        }
        let mut ends = [0u32; MAX_FAST_FIELDS];
        let (mut n, mut quotes) = (0usize, 0u64);
        let mut mark = |pos: usize| {
            if n < MAX_FAST_FIELDS {
                ends[n] = pos as u32;
            }
            n += 1;
        };
        let mut i = 0;
        while i + 8 <= line.len() {
            let word = u64::from_le_bytes(line[i..i + 8].try_into().expect("8 bytes"));
            quotes |= swar::eq_mask(word, b'"');
            let mut seps = swar::eq_mask(word, sep);
            while seps != 0 {
                mark(i + (seps.trailing_zeros() / 8) as usize);
                seps &= seps - 1;
            }
            i += 8;
        }
        for (j, &c) in line[i..].iter().enumerate() {
            if c == sep {
                mark(i + j);
            }
            quotes |= u64::from(c == b'"');
        }
        if quotes != 0 && self.quoted {
            return None;
        }
        mark(line.len());
        Some(self.check_count(n).and_then(|_| {
            let field = |k: usize| {
                let start = if k == 0 { 0 } else { ends[k - 1] as usize + 1 };
                &line[start..ends[k] as usize]
            };
            self.push_fields(field(self.user), field(self.item), self.time.map(field), self.rating.map(field), out)
        }))
    }

    /// Numeric ids by the same rule as `raw_id` ([`numeric_id`]), text ids validated and trimmed.
    fn classify_id<'a>(&self, what: &str, f: &'a [u8]) -> Result<Id<'a>, String> {
        if let Some(v) = numeric_id(f) {
            return Ok(Id::Num(v));
        }
        let tok = trim(f);
        check_id(what, tok, self.integer_ids)?;
        Ok(Id::Text(tok))
    }

    /// Converts and pushes one row's fields (untrimmed); nothing is interned unless all are good.
    fn push_fields(
        &self,
        user: &[u8],
        item: &[u8],
        time: Option<&[u8]>,
        rating: Option<&[u8]>,
        out: &mut Chunk,
    ) -> Result<(), String> {
        let (user, item) = (self.classify_id("user", user)?, self.classify_id("item", item)?);
        let time = time.map(|f| parse_time(trim(f))).transpose()?;
        let rating = rating.map(|f| parse_rating(trim(f))).transpose()?;
        let raw = |id: Id, keys: &mut TextInterner| match id {
            Id::Num(v) => v,
            Id::Text(t) => keys.raw_id(t),
        };
        let user = raw(user, &mut out.user_keys);
        let item = raw(item, &mut out.item_keys);
        out.push_raw(user, item, time, rating);
        Ok(())
    }

    fn check_count(&self, n: usize) -> Result<(), String> {
        if n == self.ncols {
            return Ok(());
        }
        let what = if n < self.ncols { "missing columns" } else { "extra columns" };
        Err(format!("{what}: expected {} fields, found {n}", self.ncols))
    }

    /// The general path's conversions, through `Chunk::push`: the reference for `push_fields`.
    fn push_row(
        &self,
        user: &[u8],
        item: &[u8],
        time: Option<&[u8]>,
        rating: Option<&[u8]>,
        out: &mut Chunk,
    ) -> Result<(), String> {
        check_id("user", user, self.integer_ids)?;
        check_id("item", item, self.integer_ids)?;
        let time = time.map(parse_time).transpose()?;
        let rating = rating.map(parse_rating).transpose()?;
        out.push(user, item, time, rating);
        Ok(())
    }
}

/// `user item item ...` in chronological order (S3-Rec, P5 and others).
pub struct SeqLines;

impl RecordParser for SeqLines {
    fn has_time(&self) -> bool {
        false
    }
    fn has_rating(&self) -> bool {
        false
    }
    fn parse(&self, line: &[u8], out: &mut Chunk) -> Result<(), String> {
        let mut toks = line.split(u8::is_ascii_whitespace).filter(|t| !t.is_empty());
        let user = toks.next().unwrap_or_default();
        let items: Vec<&[u8]> = toks.collect();
        if items.is_empty() {
            return Err("a sequence line needs a user id and at least one item id".into());
        }
        check_id("user", user, false)?;
        for item in items {
            out.push(user, item, None, None);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(line: &str, sep: Sep) -> Result<Vec<String>, String> {
        split_fields(line.as_bytes(), sep, true).map(|v| v.into_iter().map(|f| String::from_utf8(f).unwrap()).collect())
    }

    #[test]
    fn csv_quoting() {
        assert_eq!(fields(r#"a,"b,c","say ""hi""",d"#, Sep::Byte(b',')).unwrap(), vec!["a", "b,c", "say \"hi\"", "d"]);
        assert_eq!(fields("a,,b,", Sep::Byte(b',')).unwrap(), vec!["a", "", "b", ""]);
        assert!(fields(r#"a,"b"#, Sep::Byte(b',')).is_err());
        assert!(fields(r#"a,"b"x,c"#, Sep::Byte(b',')).is_err());
        assert_eq!(fields("1::Toy Story (1995)::A|B", Sep::DoubleColon).unwrap(), vec!["1", "Toy Story (1995)", "A|B"]);
        assert_eq!(fields(" 1  2\t3 ", Sep::Whitespace).unwrap(), vec!["1", "2", "3"]);
    }

    #[test]
    fn header_mapping() {
        let spec = ColumnSpec::default();
        let d = Delimited::from_header(Sep::Byte(b','), true, b"Rating,UserId,movieId,timestamp", &spec).unwrap();
        assert_eq!((d.user, d.item, d.time, d.rating), (1, 2, Some(3), Some(0)));
        let d =
            Delimited::from_header(Sep::Byte(b'\t'), false, b"user_id:token\titem_id:token\ttimestamp:float", &spec)
                .unwrap();
        assert_eq!((d.user, d.item, d.time, d.rating), (0, 1, Some(2), None));
        let err = Delimited::from_header(Sep::Byte(b','), true, b"user,item,user", &spec).err().unwrap();
        assert!(err.starts_with("the header names column 'user' 2 times (columns [1, 3])"), "{err}");
        let err = Delimited::from_header(Sep::Byte(b','), true, b"a,b", &spec).err().unwrap();
        assert!(err.contains("no user column"), "{err}");
    }

    #[test]
    fn parse_rows() {
        let d = Delimited::movielens(Sep::Whitespace);
        let mut c = Chunk::new();
        d.parse(b"196\t242\t3\t881250949", &mut c).unwrap();
        assert_eq!((c.times[0], c.ratings[0]), (881250949, 3.0));
        assert!(d.parse(b"196\t242\t3", &mut c).unwrap_err().contains("missing columns"));
        assert!(d.parse(b"196\t242\t3\t1\t5", &mut c).unwrap_err().contains("extra columns"));
        assert!(d.parse(b"196\t242\tx\t1", &mut c).unwrap_err().contains("rating 'x'"));
        assert!(d.parse(b"99999999999999999999\t242\t3\t1", &mut c).unwrap_err().contains("does not fit"));
        assert_eq!(c.users.len(), 1);
        let mut c = Chunk::new();
        SeqLines.parse(b"7 1 2 3", &mut c).unwrap();
        assert_eq!(c.items.len(), 3);
        assert!(SeqLines.parse(b"7", &mut c).is_err());
    }

    #[test]
    fn fast_path_matches_general_path() {
        let mut r = crate::rng::Rng::new(9, 0);
        let pieces = [
            "0",
            "7",
            "007",
            "42",
            "123456",
            "9999999999999999999",
            "99999999999999999999",
            "a",
            "x1",
            " 5",
            "5 ",
            "",
            "2020-01-02",
            "4.5",
            "-3",
            "1e3",
        ];
        let spec = ColumnSpec::default();
        let d = Delimited::from_header(Sep::Byte(b','), true, b"user,item,time,rating", &spec).unwrap();
        for _ in 0..20_000 {
            let n = 3 + r.below(3); // sometimes missing or extra columns
            let line: Vec<&str> = (0..n).map(|_| pieces[r.below(pieces.len())]).collect();
            let line = line.join(",");
            let (mut fast, mut general) = (Chunk::new(), Chunk::new());
            let a = d.parse_fast(line.as_bytes(), b',', &mut fast).expect("no quotes: fast path applies");
            let b = d.parse_general(line.as_bytes(), &mut general);
            assert_eq!(a, b, "{line}");
            assert_eq!((fast.users, fast.items, fast.times), (general.users, general.items, general.times), "{line}");
            assert_eq!(fast.ratings, general.ratings, "{line}");
            assert_eq!(fast.user_keys.keys_for_test(), general.user_keys.keys_for_test(), "{line}");
        }
    }
}
