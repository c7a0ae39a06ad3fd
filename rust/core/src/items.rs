//! Item metadata (the text the embedding step reads): JSON lines (Amazon 2018 and 2023, Yelp business, any
//! `{id, title/name, ...}` records), Amazon 2014 Python-literal lines, MovieLens `u.item` (latin-1,
//! `|`), `movies.dat` (`::`) and RecBole `.item` atomic files (a typed header, tab-separated). Every
//! layout becomes one [`ItemMeta`].

use crate::error::{Error, Result};
use crate::reader::{InputFile, SourceInfo};
use crate::Progress;
use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;
use serde_json::Value;

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ItemMeta {
    pub title: Option<String>,
    pub brand: Option<String>,
    pub categories: Vec<String>,
    pub description: Option<String>,
    pub price: Option<String>,
}

/// Metadata by raw item id, with what was read to get it.
#[derive(Default)]
pub struct ItemTable {
    pub meta: FxHashMap<String, ItemMeta>,
    pub skipped_lines: u64,
    pub sources: Vec<SourceInfo>,
}

const KEY_FIELDS: &[&str] = &["item_id", "asin", "parent_asin", "business_id", "movieId", "movie_id", "id", "item"];

const ML100K_GENRES: [&str; 19] = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
];

fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Array(a) => {
            let parts: Vec<String> = a.iter().filter_map(text_of).collect();
            (!parts.is_empty()).then(|| parts.join(" "))
        }
        _ => None,
    }
}

fn categories_of(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => {
            for c in s.split([',', '|']).map(str::trim).filter(|c| !c.is_empty()) {
                if !out.iter().any(|o| o == c) {
                    out.push(c.to_string());
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| categories_of(x, out)),
        _ => {}
    }
}

/// One metadata record as (raw item id, metadata).
pub fn meta_from_json(v: &Value, key_field: Option<&str>) -> std::result::Result<(String, ItemMeta), String> {
    let obj = v.as_object().ok_or("an item record must be an object")?;
    let key = match key_field {
        Some(k) => obj.get(k).ok_or_else(|| format!("no '{k}' field (given with --item-key)"))?,
        None => KEY_FIELDS
            .iter()
            .find_map(|k| obj.get(*k))
            .ok_or_else(|| format!("no item id field (looked for {KEY_FIELDS:?}; name one with --item-key)"))?,
    };
    let key = match key {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return Err("the item id must be a string or a number".into()),
    };
    let get = |names: &[&str]| names.iter().find_map(|n| obj.get(*n).and_then(text_of));
    let mut categories = Vec::new();
    // Amazon 2023 metadata: `main_category` besides `categories`, the brand as `store` or in `details`,
    // bullet-point `features` beside the `description`.
    for name in ["main_category", "categories", "category", "genres"] {
        if let Some(c) = obj.get(name) {
            categories_of(c, &mut categories);
        }
    }
    let brand = get(&["brand", "store"]).or_else(|| obj.get("details")?.get("Brand").and_then(text_of));
    let description = match (get(&["features"]), get(&["description"])) {
        (Some(f), Some(d)) => Some(format!("{f} {d}")),
        (f, d) => f.or(d),
    };
    Ok((key, ItemMeta { title: get(&["title", "name"]), brand, categories, description, price: get(&["price"]) }))
}

/// The columns of a RecBole `.item` file, from its typed header (`item_id:token\ttitle:token_seq...`).
struct RecBoleColumns {
    count: usize,
    key: usize,
    title: Option<usize>,
    brand: Option<usize>,
    categories: Option<usize>,
    description: Option<usize>,
    price: Option<usize>,
}

impl RecBoleColumns {
    /// `None` when `line` is not a RecBole header (every field `name:type` with a RecBole type).
    fn from_header(line: &[u8], key_field: Option<&str>) -> Option<std::result::Result<Self, String>> {
        let text = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
        let mut names = Vec::new();
        for field in text.split('\t') {
            let (name, kind) = field.rsplit_once(':')?;
            if !matches!(kind.trim(), "token" | "token_seq" | "float" | "float_seq") {
                return None;
            }
            names.push(name.trim().to_lowercase());
        }
        let find = |candidates: &[&str]| candidates.iter().find_map(|c| names.iter().position(|n| n == c));
        let key = match key_field {
            Some(k) => find(&[k.to_lowercase().as_str()])
                .ok_or_else(|| format!("no '{k}' column in the RecBole header {names:?} (given with --item-key)")),
            None => find(KEY_FIELDS)
                .ok_or_else(|| format!("no item id column in the RecBole header {names:?} (name one with --item-key)")),
        };
        Some(key.map(|key| RecBoleColumns {
            count: names.len(),
            key,
            title: find(&["title", "movie_title", "name", "item_name"]),
            brand: find(&["brand", "store"]),
            categories: find(&["categories", "category", "class", "genre", "genres"]),
            description: find(&["description"]),
            price: find(&["price"]),
        }))
    }

    /// One row. Token sequences are space-separated words, so a category list comes back as words.
    fn parse(&self, line: &[u8]) -> std::result::Result<(String, ItemMeta), String> {
        let text = std::str::from_utf8(line).map_err(|_| "not valid UTF-8".to_string())?.trim_end_matches('\r');
        let f: Vec<&str> = text.split('\t').collect();
        if f.len() != self.count {
            return Err(format!("{} tab-separated fields where the header names {}", f.len(), self.count));
        }
        let get = |i: Option<usize>| i.map(|i| f[i].trim()).filter(|v| !v.is_empty()).map(String::from);
        let key = get(Some(self.key)).ok_or("the item id is empty")?;
        let categories = self.categories.map_or_else(Vec::new, |i| f[i].split_whitespace().map(String::from).collect());
        let meta = ItemMeta {
            title: get(self.title),
            brand: get(self.brand),
            categories,
            description: get(self.description),
            price: get(self.price),
        };
        Ok((key, meta))
    }
}

fn decode(line: &[u8]) -> String {
    // MovieLens files are latin-1; everything else must be UTF-8 (checked by the callers).
    match std::str::from_utf8(line) {
        Ok(s) => s.to_string(),
        Err(_) => line.iter().map(|&b| b as char).collect(),
    }
}

fn parse_line(line: &[u8], key_field: Option<&str>) -> std::result::Result<(String, ItemMeta), String> {
    let trimmed = line.trim_ascii_start();
    if trimmed.starts_with(b"{") {
        let v = match serde_json::from_slice::<Value>(trimmed) {
            Ok(v) => v,
            Err(e) => {
                let text = std::str::from_utf8(trimmed).map_err(|_| "not valid UTF-8".to_string())?;
                if !trimmed.starts_with(b"{'") {
                    return Err(format!("bad JSON: {e}"));
                }
                crate::pyliteral::parse(text)?
            }
        };
        return meta_from_json(&v, key_field);
    }
    let text = decode(line);
    if text.contains("::") {
        let f: Vec<&str> = text.split("::").collect();
        if f.len() != 3 {
            return Err(format!("movies.dat lines have 3 fields (id::title::genres), found {}", f.len()));
        }
        let categories = f[2].split('|').map(str::trim).filter(|g| !g.is_empty()).map(String::from).collect();
        return Ok((
            f[0].trim().to_string(),
            ItemMeta { title: Some(f[1].trim().to_string()), categories, ..Default::default() },
        ));
    }
    let f: Vec<&str> = text.split('|').collect();
    if f.len() == 5 + ML100K_GENRES.len() {
        let categories = ML100K_GENRES
            .iter()
            .zip(&f[5..])
            .filter(|(_, flag)| flag.trim() == "1")
            .map(|(g, _)| g.to_string())
            .collect();
        return Ok((
            f[0].trim().to_string(),
            ItemMeta { title: Some(f[1].trim().to_string()), categories, ..Default::default() },
        ));
    }
    Err("not a recognised item metadata line (JSON object, Python dict, MovieLens u.item or movies.dat)".into())
}

/// Reads metadata for the items in `wanted` (raw ids); later files and lines win on duplicates.
pub fn read_items(
    paths: &[String],
    key_field: Option<&str>,
    wanted: &FxHashSet<&str>,
    skip_bad_lines: bool,
    progress: Progress,
) -> Result<ItemTable> {
    let total: u64 = paths.iter().map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)).sum();
    let mut done_before = 0;
    let mut out = FxHashMap::default();
    let mut skipped = 0u64;
    let mut sources = Vec::new();
    for path in paths {
        let mut f = InputFile::open(path)?;
        let mut any = false;
        let mut recbole: Option<RecBoleColumns> = None;
        while let Some(block) = f.next_block(4 << 20)? {
            for (line_no, line) in block.lines() {
                if !any {
                    any = true;
                    match RecBoleColumns::from_header(line, key_field) {
                        Some(Ok(columns)) => {
                            recbole = Some(columns);
                            continue;
                        }
                        Some(Err(msg)) => return Err(Error::Parse { file: path.clone(), line: line_no, msg }),
                        None => {}
                    }
                }
                let parsed = match &recbole {
                    Some(columns) => columns.parse(line),
                    None => parse_line(line, key_field),
                };
                match parsed {
                    Ok((key, meta)) => {
                        if wanted.contains(key.as_str()) {
                            out.insert(key, meta);
                        }
                    }
                    Err(_) if skip_bad_lines => skipped += 1,
                    Err(msg) => return Err(Error::Parse { file: path.clone(), line: line_no, msg }),
                }
            }
            if !progress("items", done_before + f.bytes_read(), total) {
                return Err(Error::Cancelled);
            }
        }
        if !any {
            return Err(Error::Input(format!("{path}: the item file is empty")));
        }
        let info = f.finish()?;
        done_before += info.bytes;
        sources.push(info);
    }
    Ok(ItemTable { meta: out, skipped_lines: skipped, sources })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts() {
        let (k, m) = parse_line(br#"{"asin": "B1", "title": "Soap", "brand": "Acme", "category": ["Beauty", "Bath"], "description": ["Nice", "soap"], "price": "$3.50"}"#, None).unwrap();
        assert_eq!(k, "B1");
        assert_eq!(m.categories, vec!["Beauty", "Bath"]);
        assert_eq!(m.description.as_deref(), Some("Nice soap"));
        let (k, m) = parse_line(
            br#"{'asin': 'B2', 'title': 'Gel', 'price': 4.5, 'categories': [['Beauty', 'Hair'], ['Beauty']]}"#,
            None,
        )
        .unwrap();
        assert_eq!((k.as_str(), m.price.as_deref()), ("B2", Some("4.5")));
        assert_eq!(m.categories, vec!["Beauty", "Hair"]);
        let (k, m) =
            parse_line(br#"{"business_id": "x", "name": "Cafe", "categories": "Food, Coffee & Tea"}"#, None).unwrap();
        assert_eq!((k.as_str(), m.title.as_deref()), ("x", Some("Cafe")));
        assert_eq!(m.categories, vec!["Food", "Coffee & Tea"]);
        let (k, m) = parse_line(b"1::Toy Story (1995)::Animation|Children's|Comedy", None).unwrap();
        assert_eq!((k.as_str(), m.categories.len()), ("1", 3));
        let line = b"2|Caf\xe9 (1995)|01-Jan-1995||http://x|0|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0|1|0|0";
        let (k, m) = parse_line(line, None).unwrap();
        assert_eq!((k.as_str(), m.title.as_deref()), ("2", Some("Caf\u{e9} (1995)")));
        assert_eq!(m.categories, vec!["Action", "Adventure", "Thriller"]);
        let amazon_2023 = br#"{"main_category": "All Beauty", "title": "Gel", "average_rating": 4.8, "features": ["Vegan"], "description": [], "price": null, "store": "Acme", "categories": ["Hair Care"], "details": {"Brand": "Other"}, "parent_asin": "P1"}"#;
        let (k, m) = parse_line(amazon_2023, None).unwrap();
        assert_eq!((k.as_str(), m.brand.as_deref(), m.description.as_deref()), ("P1", Some("Acme"), Some("Vegan")));
        assert_eq!((m.categories, m.price), (vec!["All Beauty".to_string(), "Hair Care".to_string()], None));
        let (_, m) = parse_line(br#"{"parent_asin": "P2", "store": "", "details": {"Brand": "Zed"}}"#, None).unwrap();
        assert_eq!(m.brand.as_deref(), Some("Zed"));
        assert!(parse_line(b"just text", None).is_err());
        // RecBole's own ml-100k.item layout, and ours (llmesr-export).
        let columns = RecBoleColumns::from_header(
            b"item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq",
            None,
        )
        .unwrap()
        .unwrap();
        let (k, m) = columns.parse(b"1\tToy Story\t1995\tAnimation Children's Comedy").unwrap();
        assert_eq!((k.as_str(), m.title.as_deref()), ("1", Some("Toy Story")));
        assert_eq!(m.categories, vec!["Animation", "Children's", "Comedy"]);
        assert!(columns.parse(b"2\tHeat").unwrap_err().contains("2 tab-separated fields where the header names 4"));
        let ours = RecBoleColumns::from_header(b"item_id:token\ttitle:token_seq\tcategories:token_seq", None);
        let (_, m) = ours.unwrap().unwrap().parse(b"B7\t\tFood").unwrap();
        assert_eq!((m.title, m.categories), (None, vec!["Food".to_string()]));
        let keyless = RecBoleColumns::from_header(b"title:token_seq\tprice:float", None).unwrap();
        assert!(keyless.err().unwrap().contains("no item id column"));
        assert!(RecBoleColumns::from_header(b"item_id\ttitle", None).is_none());
        assert!(parse_line(br#"{"title": "no id"}"#, None).unwrap_err().contains("--item-key"));
    }
}
