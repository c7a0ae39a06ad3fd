//! A synthetic long-tail dataset whose item text carries real semantic structure: items belong to
//! topics (product categories) with topic-specific vocabulary, popularity is Zipf-distributed, users
//! follow one or two topics, histories are mostly 3-10 items long, and consecutive items tend to be
//! related (the next item of a series), so both sequence models and text embeddings have signal.

use crate::ingest::RawLog;
use crate::intern::TextInterner;
use crate::items::ItemMeta;
use crate::rng::Rng;
use rustc_hash::FxHashMap;
use serde::Serialize;

struct Topic {
    category: &'static str,
    nouns: [&'static str; 8],
    adjectives: [&'static str; 8],
    brands: [&'static str; 4],
}

const TOPICS: [Topic; 10] = [
    Topic {
        category: "Beauty",
        nouns: ["moisturizer", "serum", "cleanser", "sunscreen", "toner", "face mask", "eye cream", "lip balm"],
        adjectives: [
            "hydrating",
            "gentle",
            "brightening",
            "nourishing",
            "oil-free",
            "soothing",
            "anti-aging",
            "fragrance-free",
        ],
        brands: ["Lumiere", "DermaPure", "Velvet Bloom", "AquaSkin"],
    },
    Topic {
        category: "Electronics",
        nouns: [
            "headphones",
            "phone charger",
            "bluetooth speaker",
            "mechanical keyboard",
            "wireless mouse",
            "webcam",
            "power bank",
            "USB-C cable",
        ],
        adjectives: [
            "wireless",
            "fast-charging",
            "portable",
            "ergonomic",
            "noise-cancelling",
            "compact",
            "rechargeable",
            "high-resolution",
        ],
        brands: ["Voltix", "Nexacore", "Sonique", "Circuit Co"],
    },
    Topic {
        category: "Kitchen",
        nouns: [
            "skillet",
            "chef knife",
            "blender",
            "cutting board",
            "electric kettle",
            "spatula",
            "mixing bowl",
            "coffee grinder",
        ],
        adjectives: [
            "nonstick",
            "stainless steel",
            "ceramic",
            "cast-iron",
            "heavy-duty",
            "bamboo",
            "dishwasher-safe",
            "professional",
        ],
        brands: ["CasaChef", "Ironhearth", "Mezza", "Kitchara"],
    },
    Topic {
        category: "Sports & Outdoors",
        nouns: [
            "running shoes",
            "yoga mat",
            "water bottle",
            "camping tent",
            "hiking backpack",
            "dumbbell set",
            "cycling gloves",
            "trail jacket",
        ],
        adjectives: [
            "lightweight",
            "waterproof",
            "breathable",
            "insulated",
            "durable",
            "foldable",
            "non-slip",
            "reflective",
        ],
        brands: ["Summitline", "TrailForge", "Pacewell", "Northpeak"],
    },
    Topic {
        category: "Books",
        nouns: [
            "detective novel",
            "crime thriller",
            "mystery anthology",
            "spy story",
            "courtroom drama",
            "cozy mystery",
            "noir paperback",
            "whodunit",
        ],
        adjectives: [
            "gripping",
            "bestselling",
            "suspenseful",
            "award-winning",
            "dark",
            "twisty",
            "classic",
            "page-turning",
        ],
        brands: ["Ravenhouse Press", "Inkwell Books", "Midnight Publishing", "Quill & Key"],
    },
    Topic {
        category: "Toys & Games",
        nouns: [
            "jigsaw puzzle",
            "building blocks",
            "plush bear",
            "remote control car",
            "board game",
            "dollhouse",
            "stunt kite",
            "art and craft set",
        ],
        adjectives: [
            "colorful",
            "educational",
            "kid-friendly",
            "family",
            "creative",
            "wooden",
            "interactive",
            "classic",
        ],
        brands: ["Playmora", "Tinker Tots", "Funwise", "Brickly"],
    },
    Topic {
        category: "Pet Supplies",
        nouns: [
            "dry dog food",
            "clumping cat litter",
            "chew toy",
            "orthopedic pet bed",
            "dog leash",
            "aquarium filter",
            "bird feeder",
            "cat scratching tree",
        ],
        adjectives: [
            "grain-free",
            "odor-control",
            "durable",
            "washable",
            "adjustable",
            "quiet",
            "natural",
            "vet-approved",
        ],
        brands: ["Pawfect", "Whisker & Tail", "FurEver", "Barkley"],
    },
    Topic {
        category: "Musical Instruments",
        nouns: [
            "acoustic guitar strings",
            "drum sticks",
            "keyboard stand",
            "concert ukulele",
            "violin rosin",
            "distortion pedal",
            "studio microphone",
            "digital metronome",
        ],
        adjectives: [
            "bright-sounding",
            "maple",
            "professional",
            "vintage",
            "low-noise",
            "beginner",
            "handcrafted",
            "tuned",
        ],
        brands: ["Harmonix", "Tonewood", "Stagecraft", "Resona"],
    },
    Topic {
        category: "Grocery",
        nouns: [
            "green tea",
            "espresso beans",
            "herbal tea",
            "cold brew coffee",
            "matcha powder",
            "chai latte mix",
            "decaf coffee",
            "oolong tea",
        ],
        adjectives: [
            "organic",
            "single-origin",
            "dark roast",
            "caffeine-free",
            "fair-trade",
            "loose-leaf",
            "smooth",
            "aromatic",
        ],
        brands: ["Leaf & Bean", "Brewhaven", "Teaology", "Roastwell"],
    },
    Topic {
        category: "Garden",
        nouns: [
            "garden hose",
            "pruning shears",
            "flower seeds",
            "ceramic planter",
            "lawn sprinkler",
            "compost bin",
            "watering can",
            "gardening gloves",
        ],
        adjectives: [
            "expandable",
            "rust-proof",
            "heirloom",
            "weatherproof",
            "adjustable",
            "eco-friendly",
            "ergonomic",
            "heavy-duty",
        ],
        brands: ["Greenthumb", "Bloomfield", "Terra Verde", "Rootstock"],
    },
];

#[derive(Clone, Debug, Serialize)]
pub struct SyntheticConfig {
    pub n_users: usize,
    pub n_items: usize,
    pub n_topics: usize,
    /// Zipf exponent of item popularity.
    pub zipf: f64,
    pub seed: u64,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        SyntheticConfig { n_users: 2000, n_items: 1000, n_topics: 8, zipf: 1.1, seed: 42 }
    }
}

pub fn generate(cfg: &SyntheticConfig) -> Result<(RawLog, FxHashMap<String, ItemMeta>), String> {
    if cfg.n_users < 2 || cfg.n_items < 10 {
        return Err("the synthetic dataset needs at least 2 users and 10 items".into());
    }
    if cfg.n_users >= 1 << 30 || cfg.n_items >= 1 << 30 {
        return Err("the synthetic dataset is limited to 2^30 users and items".into());
    }
    if cfg.n_topics == 0 || cfg.n_topics > TOPICS.len() {
        return Err(format!("n_topics must be between 1 and {}", TOPICS.len()));
    }
    if !(cfg.zipf.is_finite() && cfg.zipf >= 0.0) {
        return Err("zipf must be a non-negative number".into());
    }
    let mut rng = Rng::new(cfg.seed, 0);
    // Items: topic, position in its topic's series, popularity weight from a shuffled Zipf rank.
    let topic_of: Vec<usize> = (0..cfg.n_items).map(|_| rng.below(cfg.n_topics)).collect();
    let mut ranks: Vec<usize> = (1..=cfg.n_items).collect();
    for i in (1..ranks.len()).rev() {
        ranks.swap(i, rng.below(i + 1));
    }
    let weight: Vec<f64> = ranks.iter().map(|&r| (r as f64).powf(-cfg.zipf)).collect();
    let mut by_topic: Vec<Vec<usize>> = vec![Vec::new(); cfg.n_topics];
    for (i, &t) in topic_of.iter().enumerate() {
        by_topic[t].push(i);
    }
    let cumulative = |ids: &[usize]| -> Vec<f64> {
        ids.iter()
            .scan(0.0, |acc, &i| {
                *acc += weight[i];
                Some(*acc)
            })
            .collect()
    };
    let all: Vec<usize> = (0..cfg.n_items).collect();
    let all_cum = cumulative(&all);
    let topic_cum: Vec<Vec<f64>> = by_topic.iter().map(|ids| cumulative(ids)).collect();

    let mut meta = FxHashMap::default();
    for (i, &t) in topic_of.iter().enumerate() {
        let mut r = Rng::new(cfg.seed, 1_000_000 + i as u64);
        let topic = &TOPICS[t];
        let noun = topic.nouns[r.below(8)];
        let (a1, a2) = (topic.adjectives[r.below(8)], topic.adjectives[r.below(8)]);
        let brand = topic.brands[r.below(4)];
        let title = if a1 == a2 { format!("{brand} {a1} {noun}") } else { format!("{brand} {a1} {a2} {noun}") };
        let description = format!(
            "A {a1} {noun} from {brand}, part of our {} range. {a2} and built to last.",
            topic.category.to_lowercase()
        );
        let price = format!("{:.2}", 5.0 + 95.0 * r.uniform() * r.uniform());
        meta.insert(
            (i + 1).to_string(),
            ItemMeta {
                title: Some(title),
                brand: Some(brand.into()),
                categories: vec![topic.category.into(), noun.into()],
                description: Some(description),
                price: Some(price),
            },
        );
    }

    let mut log =
        RawLog { times: Some(Vec::new()), ratings: Some(Vec::new()), format: Some("synthetic"), ..Default::default() };
    let (mut raw_users, mut raw_items) = (Vec::new(), Vec::new());
    for u in 0..cfg.n_users {
        let mut r = Rng::new(cfg.seed, 1 + u as u64);
        let n_interests = 1 + usize::from(r.uniform() < 0.3);
        let interests: Vec<usize> = (0..n_interests).map(|_| r.below(cfg.n_topics)).collect();
        // Long-tailed history length: most users 3-10, a few much longer.
        let len = (3.0 + (1.2 + 0.9 * r.normal()).exp()).min(200.0) as usize;
        let mut t = 1_500_000_000i64 + r.below(50_000_000) as i64;
        let mut prev: Option<usize> = None;
        for _ in 0..len {
            let item = match prev {
                // Continue a series: the next item of the same topic.
                Some(p) if r.uniform() < 0.35 => {
                    let ids = &by_topic[topic_of[p]];
                    let k = ids.iter().position(|&x| x == p).unwrap_or(0);
                    ids[(k + 1) % ids.len()]
                }
                _ if r.uniform() < 0.85 => {
                    let topic = interests[r.below(n_interests)];
                    if by_topic[topic].is_empty() {
                        all[r.pick_cumulative(&all_cum)]
                    } else {
                        by_topic[topic][r.pick_cumulative(&topic_cum[topic])]
                    }
                }
                _ => all[r.pick_cumulative(&all_cum)],
            };
            t += 3600 + r.below(30 * 86400) as i64;
            raw_users.push(u as u32 + 1);
            raw_items.push(item as u32 + 1);
            if let Some(v) = log.times.as_mut() {
                v.push(t);
            }
            let rating = [3.0, 4.0, 4.0, 5.0, 5.0][r.below(5)];
            if let Some(v) = log.ratings.as_mut() {
                v.push(rating);
            }
            prev = Some(item);
        }
    }
    let no_text = TextInterner::default();
    log.user_keys.intern_rows(&raw_users, &no_text, &mut log.users);
    log.item_keys.intern_rows(&raw_items, &no_text, &mut log.items);
    Ok((log, meta))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_long_tail() {
        let cfg = SyntheticConfig { n_users: 500, n_items: 300, ..Default::default() };
        let (a, meta) = generate(&cfg).unwrap();
        let (b, _) = generate(&cfg).unwrap();
        assert_eq!(a.items, b.items);
        assert_eq!(meta.len(), 300);
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
}
