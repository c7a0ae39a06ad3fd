//! The built-in synthetic catalogue, written from a generative story in which item text carries what it
//! carries in real catalogues (the README's "Synthetic data" tells the story and its parameters):
//!
//! 1. Items have latent attributes: a department and a product type in it (the category path), a brand of
//!    that department, a style and a price band (correlated with the brand). Popularity is Zipf over a
//!    shuffled rank, so most items are rarely bought.
//! 2. An item's title and description are written from its attributes alone, through synonyms and with
//!    irrelevant words (colours, marketing, model codes, filler sentences); the style is sometimes left
//!    unsaid. Nothing in the text names a user, a sequence or a position.
//! 3. A user has tastes: one or two departments, a style, a price band, a favourite brand per department.
//! 4. A history is a chain of choices: the complement of the last item's type (a skillet, then a spatula),
//!    another item of the last item's brand, a repeat purchase, or a fresh pick in a liked department.
//!    Every pick weighs an item's popularity by how well its attributes match the user's tastes.
//!
//! So a sequence model learns the chains from item ids where items are popular, while for the rarely
//! bought items only their text says what they are. Deterministic for a seed; the catalogue and its text
//! do not depend on the number of users.

mod vocab;

use crate::ingest::RawLog;
use crate::intern::TextInterner;
use crate::items::ItemMeta;
use crate::rng::Rng;
use rustc_hash::FxHashMap;
use serde::Serialize;
use vocab::{Department, COLOURS, DEPARTMENTS, FILLER, MARKETING, PRICE_BANDS, STYLES};

#[derive(Clone, Debug, Serialize)]
pub struct SyntheticConfig {
    pub n_users: usize,
    pub n_items: usize,
    /// Departments (at most 10).
    pub n_topics: usize,
    /// Zipf exponent of item popularity.
    pub zipf: f64,
    pub seed: u64,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        SyntheticConfig { n_users: 2000, n_items: 1500, n_topics: 8, zipf: 1.0, seed: 42 }
    }
}

/// How the next item is chosen (the rest: a fresh pick in one of the user's departments).
const P_COMPLEMENT: f64 = 0.45;
const P_SAME_BRAND: f64 = 0.15;
const P_REPEAT: f64 = 0.05;
/// A pick's weight is popularity times these factors for each attribute that matches the user's taste.
const AFFINITY_STYLE: f64 = 6.0;
const AFFINITY_BAND: f64 = 2.5;
const AFFINITY_BRAND: f64 = 3.0;
/// Chance that an item's price band is its brand's usual one.
const P_BRAND_BAND: f64 = 0.6;
const TYPES: usize = 8;
const BRANDS: usize = 5;

/// Random streams, apart so that the catalogue does not depend on the users and each user on no other.
const STREAM_CATALOGUE: u64 = 0;
const STREAM_TEXT: u64 = 1 << 40;
const STREAM_USER: u64 = 2 << 40;

#[derive(Clone, Copy)]
struct Item {
    department: usize,
    kind: usize,
    brand: usize,
    style: usize,
    band: usize,
    popularity: f64,
}

struct Taste {
    departments: Vec<usize>,
    style: usize,
    band: usize,
    /// Favourite brand of each department (index by department).
    brands: Vec<usize>,
}

impl Taste {
    fn affinity(&self, item: &Item) -> f64 {
        let mut a = 1.0;
        if item.style == self.style {
            a *= AFFINITY_STYLE;
        }
        if item.band == self.band {
            a *= AFFINITY_BAND;
        }
        if self.brands[item.department] == item.brand {
            a *= AFFINITY_BRAND;
        }
        a
    }
}

fn catalogue(cfg: &SyntheticConfig) -> Vec<Item> {
    let mut r = Rng::new(cfg.seed, STREAM_CATALOGUE);
    let mut ranks: Vec<usize> = (1..=cfg.n_items).collect();
    for i in (1..ranks.len()).rev() {
        ranks.swap(i, r.below(i + 1));
    }
    ranks
        .iter()
        .map(|&rank| {
            let (department, kind, brand) = (r.below(cfg.n_topics), r.below(TYPES), r.below(BRANDS));
            let band = if r.uniform() < P_BRAND_BAND { brand % PRICE_BANDS.len() } else { r.below(PRICE_BANDS.len()) };
            Item {
                department,
                kind,
                brand,
                style: r.below(STYLES.len()),
                band,
                popularity: (rank as f64).powf(-cfg.zipf),
            }
        })
        .collect()
}

/// An item's text, from its attributes and its own random stream only.
fn item_text(seed: u64, index: usize, item: &Item) -> ItemMeta {
    let mut r = Rng::new(seed, STREAM_TEXT + index as u64);
    let dept: &Department = &DEPARTMENTS[item.department];
    let [canonical, synonym] = dept.types[item.kind];
    let brand = dept.brands[item.brand];
    let style_word = |r: &mut Rng| STYLES[item.style][r.below(3)];
    let (band_label, low, high) = PRICE_BANDS[item.band];
    let price = low + (high - low) * r.uniform();

    let mut title = Vec::new();
    if r.uniform() < 0.25 {
        title.push(MARKETING[r.below(MARKETING.len())].to_string());
    }
    title.push(brand.to_string());
    if r.uniform() < 0.7 {
        title.push(style_word(&mut r).to_string());
    }
    if r.uniform() < 0.4 {
        title.push(COLOURS[r.below(COLOURS.len())].to_string());
    }
    title.push(if r.uniform() < 0.5 { canonical } else { synonym }.to_string());
    match r.below(4) {
        0 => title.push(format!("- {}-Pack", 2 + r.below(4))),
        1 => title.push(format!("(Model {}{})", (b'A' + r.below(26) as u8) as char, 100 + r.below(900))),
        _ => {}
    }

    let mut description = Vec::new();
    let name = if r.uniform() < 0.5 { synonym } else { canonical };
    if r.uniform() < 0.6 {
        let style = style_word(&mut r);
        description.push(format!("{} {style} {name} by {brand}.", article(style)));
    } else {
        description.push(format!("{} {name} by {brand}.", article(name)));
    }
    if r.uniform() < 0.5 {
        description.push(format!("{} {band_label} choice.", article(band_label)));
    }
    for _ in 0..1 + r.below(2) {
        description.push(FILLER[r.below(FILLER.len())].to_string());
    }
    let mut categories = vec![dept.name.to_string()];
    if r.uniform() < 0.5 {
        categories.push(canonical.to_string());
    }
    ItemMeta {
        title: Some(title.join(" ")),
        brand: Some(brand.into()),
        categories,
        description: Some(description.join(" ")),
        price: Some(format!("{price:.2}")),
    }
}

fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u', 'A', 'E', 'I', 'O', 'U']) {
        "An"
    } else {
        "A"
    }
}

/// Items grouped for the picks: all of them, by department, by (department, type) and by (department,
/// brand).
struct Pools {
    all: Vec<usize>,
    department: Vec<Vec<usize>>,
    kind: Vec<Vec<usize>>,
    brand: Vec<Vec<usize>>,
}

impl Pools {
    fn new(items: &[Item], n_departments: usize) -> Self {
        let mut p = Pools {
            all: (0..items.len()).collect(),
            department: vec![Vec::new(); n_departments],
            kind: vec![Vec::new(); n_departments * TYPES],
            brand: vec![Vec::new(); n_departments * BRANDS],
        };
        for (i, it) in items.iter().enumerate() {
            p.department[it.department].push(i);
            p.kind[it.department * TYPES + it.kind].push(i);
            p.brand[it.department * BRANDS + it.brand].push(i);
        }
        p
    }
}

/// One item of `pool` not in `bought`, in proportion to popularity times the user's affinity (None if
/// there is none: repeats happen only as repeat purchases).
fn pick(r: &mut Rng, pool: &[usize], items: &[Item], taste: &Taste, bought: &[usize]) -> Option<usize> {
    let cumulative: Vec<f64> = pool
        .iter()
        .scan(0.0, |acc, &i| {
            if !bought.contains(&i) {
                *acc += items[i].popularity * taste.affinity(&items[i]);
            }
            Some(*acc)
        })
        .collect();
    (cumulative.last().is_some_and(|&total| total > 0.0)).then(|| pool[r.pick_cumulative(&cumulative)])
}

fn history(r: &mut Rng, taste: &Taste, items: &[Item], pools: &Pools) -> Vec<usize> {
    // Long-tailed history length: most users 3-10 items, a few much longer; never more than a quarter
    // of a (tiny) catalogue, so every user leaves items to draw evaluation negatives from.
    let cap = (items.len() / 4).clamp(3, 200) as f64;
    let len = (3.0 + (1.2 + 0.9 * r.normal()).exp()).min(cap) as usize;
    let fresh = |r: &mut Rng, bought: &[usize]| {
        let d = taste.departments[r.below(taste.departments.len())];
        pick(r, &pools.department[d], items, taste, bought)
    };
    let mut out: Vec<usize> = Vec::with_capacity(len);
    while out.len() < len {
        let next = match out.last().map(|&p| items[p]) {
            None => fresh(r, &out),
            Some(prev) => {
                let u = r.uniform();
                if u < P_COMPLEMENT {
                    let kind = (prev.kind + 1) % TYPES;
                    pick(r, &pools.kind[prev.department * TYPES + kind], items, taste, &out)
                } else if u < P_COMPLEMENT + P_SAME_BRAND {
                    pick(r, &pools.brand[prev.department * BRANDS + prev.brand], items, taste, &out)
                } else if u < P_COMPLEMENT + P_SAME_BRAND + P_REPEAT {
                    out.last().copied()
                } else {
                    fresh(r, &out)
                }
            }
        };
        // A pool with nothing left falls back to a fresh pick, then to any item, then to a repeat.
        let next = next
            .or_else(|| fresh(r, &out))
            .or_else(|| pick(r, &pools.all, items, taste, &out))
            .or_else(|| out.last().copied());
        match next {
            Some(item) => out.push(item),
            None => break, // (unreachable: the first pick from a non-empty catalogue always finds one)
        }
    }
    out
}

pub fn generate(cfg: &SyntheticConfig) -> Result<(RawLog, FxHashMap<String, ItemMeta>), String> {
    if cfg.n_users < 2 || cfg.n_items < 10 {
        return Err("the synthetic dataset needs at least 2 users and 10 items".into());
    }
    if cfg.n_users >= 1 << 30 || cfg.n_items >= 1 << 30 {
        return Err("the synthetic dataset is limited to 2^30 users and items".into());
    }
    if cfg.n_topics == 0 || cfg.n_topics > DEPARTMENTS.len() {
        return Err(format!("n_topics (departments) must be between 1 and {}", DEPARTMENTS.len()));
    }
    if !(cfg.zipf.is_finite() && cfg.zipf >= 0.0) {
        return Err("zipf must be a non-negative number".into());
    }
    let items = catalogue(cfg);
    let meta: FxHashMap<String, ItemMeta> =
        items.iter().enumerate().map(|(i, it)| ((i + 1).to_string(), item_text(cfg.seed, i, it))).collect();
    let pools = Pools::new(&items, cfg.n_topics);

    let mut log =
        RawLog { times: Some(Vec::new()), ratings: Some(Vec::new()), format: Some("synthetic"), ..Default::default() };
    let (mut raw_users, mut raw_items, mut times, mut ratings) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for u in 0..cfg.n_users {
        let mut r = Rng::new(cfg.seed, STREAM_USER + u as u64);
        let first = r.below(cfg.n_topics);
        let mut departments = vec![first];
        if r.uniform() < 0.3 {
            departments.push(r.below(cfg.n_topics));
        }
        let taste = Taste {
            departments,
            style: r.below(STYLES.len()),
            band: r.below(PRICE_BANDS.len()),
            brands: (0..cfg.n_topics).map(|_| r.below(BRANDS)).collect(),
        };
        let mut t = 1_500_000_000i64 + r.below(50_000_000) as i64;
        for item in history(&mut r, &taste, &items, &pools) {
            t += 3600 + r.below(30 * 86400) as i64;
            raw_users.push(u as u32 + 1);
            raw_items.push(item as u32 + 1);
            times.push(t);
            ratings.push([3.0, 4.0, 4.0, 5.0, 5.0][r.below(5)]);
        }
    }
    log.times = Some(times);
    log.ratings = Some(ratings);
    let no_text = TextInterner::default();
    log.user_keys.intern_rows(&raw_users, &no_text, &mut log.users);
    log.item_keys.intern_rows(&raw_items, &no_text, &mut log.items);
    Ok((log, meta))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> SyntheticConfig {
        SyntheticConfig { n_users: 500, n_items: 300, ..Default::default() }
    }

    #[test]
    fn deterministic_long_tail() {
        let (a, meta) = generate(&SyntheticConfig::default()).unwrap();
        let (b, _) = generate(&SyntheticConfig::default()).unwrap();
        assert_eq!(a.items, b.items);
        assert_eq!(meta.len(), 1500);
        let mut counts = vec![0usize; a.item_keys.len()];
        a.items.iter().for_each(|&i| counts[i as usize] += 1);
        counts.sort_unstable_by(|x, y| y.cmp(x));
        let top = counts[..counts.len() / 5].iter().sum::<usize>() as f64;
        assert!(top / a.len() as f64 > 0.5, "the top 20% of items should carry most interactions");
        let mut lens = FxHashMap::default();
        a.users.iter().for_each(|&u| *lens.entry(u).or_insert(0usize) += 1);
        let short = lens.values().filter(|&&l| l <= 10).count() as f64 / lens.len() as f64;
        assert!(short > 0.6, "most histories are short: {short}");
    }

    #[test]
    fn catalogue_text_does_not_depend_on_users() {
        let (_, few) = generate(&SyntheticConfig { n_users: 10, ..small() }).unwrap();
        let (_, many) = generate(&small()).unwrap();
        for (id, m) in &few {
            assert_eq!(m.title, many[id].title);
            assert_eq!(m.description, many[id].description);
        }
    }

    #[test]
    fn text_is_written_from_the_attributes() {
        let cfg = small();
        let items = catalogue(&cfg);
        for (i, it) in items.iter().enumerate() {
            let m = item_text(cfg.seed, i, it);
            let d = &DEPARTMENTS[it.department];
            let text = format!("{} {}", m.title.as_deref().unwrap(), m.description.as_deref().unwrap());
            assert!(text.contains(d.brands[it.brand]));
            assert!(d.types[it.kind].iter().any(|w| text.contains(w)), "{text}");
            assert_eq!(m.categories[0], d.name);
            // A style word in the text is the item's own style.
            for (s, words) in STYLES.iter().enumerate() {
                if s != it.style {
                    assert!(!words.iter().any(|w| text.split(' ').any(|t| t == *w)), "{text}");
                }
            }
        }
    }

    #[test]
    fn complements_follow_each_other() {
        let cfg = SyntheticConfig { n_users: 2000, n_items: 1000, ..Default::default() };
        let items = catalogue(&cfg);
        let (log, _) = generate(&cfg).unwrap();
        // Numeric raw ids are their own codes: item code c is catalogue item c - 1.
        let (mut pairs, mut complements) = (0usize, 0usize);
        for w in 0..log.len() - 1 {
            if log.users[w] == log.users[w + 1] {
                let (a, b) = (items[log.items[w] as usize - 1], items[log.items[w + 1] as usize - 1]);
                pairs += 1;
                complements += usize::from(a.department == b.department && b.kind == (a.kind + 1) % TYPES);
            }
        }
        let share = complements as f64 / pairs as f64;
        assert!(share > P_COMPLEMENT && share < 0.7, "{share}");
    }
}
