//! The words the synthetic catalogue's text is written with. A product type has two names (synonyms); its
//! department's types are listed so that each one's complement (what is bought next) is the following one.

pub struct Department {
    pub name: &'static str,
    /// Product types, each `[canonical name, synonym]`; type k's complement is type (k + 1) mod 8.
    pub types: [[&'static str; 2]; 8],
    pub brands: [&'static str; 5],
}

pub const DEPARTMENTS: [Department; 10] = [
    Department {
        name: "Beauty",
        types: [
            ["cleanser", "face wash"],
            ["toner", "clarifying tonic"],
            ["serum", "concentrate"],
            ["moisturizer", "face cream"],
            ["sunscreen", "SPF lotion"],
            ["lip balm", "lip care stick"],
            ["face mask", "sheet mask"],
            ["makeup remover", "cleansing water"],
        ],
        brands: ["Lumiere", "DermaPure", "Velvet Bloom", "AquaSkin", "Orchidea"],
    },
    Department {
        name: "Electronics",
        types: [
            ["laptop stand", "notebook riser"],
            ["wireless mouse", "cordless mouse"],
            ["mechanical keyboard", "typing keyboard"],
            ["webcam", "video camera"],
            ["headphones", "over-ear headset"],
            ["bluetooth speaker", "portable speaker"],
            ["power bank", "battery pack"],
            ["USB-C cable", "charging cord"],
        ],
        brands: ["Voltix", "Nexacore", "Sonique", "Circuit Co", "Pixelbay"],
    },
    Department {
        name: "Kitchen",
        types: [
            ["skillet", "frying pan"],
            ["spatula", "turner"],
            ["chef knife", "cook's knife"],
            ["cutting board", "chopping block"],
            ["mixing bowl", "prep bowl"],
            ["blender", "smoothie maker"],
            ["coffee grinder", "bean mill"],
            ["electric kettle", "water boiler"],
        ],
        brands: ["CasaChef", "Ironhearth", "Mezza", "Kitchara", "Copperleaf"],
    },
    Department {
        name: "Sports & Outdoors",
        types: [
            ["running shoes", "trainers"],
            ["running socks", "crew socks"],
            ["water bottle", "hydration flask"],
            ["hiking backpack", "trail daypack"],
            ["camping tent", "shelter"],
            ["sleeping bag", "camp quilt"],
            ["yoga mat", "exercise mat"],
            ["resistance bands", "workout bands"],
        ],
        brands: ["Summitline", "TrailForge", "Pacewell", "Northpeak", "Ridgeway"],
    },
    Department {
        name: "Books",
        types: [
            ["detective novel", "mystery novel"],
            ["crime thriller", "suspense thriller"],
            ["spy story", "espionage novel"],
            ["courtroom drama", "legal thriller"],
            ["historical saga", "period novel"],
            ["cookbook", "recipe collection"],
            ["travel guide", "guidebook"],
            ["poetry collection", "book of verse"],
        ],
        brands: ["Ravenhouse Press", "Inkwell Books", "Midnight Publishing", "Quill & Key", "Harbor Lane"],
    },
    Department {
        name: "Toys & Games",
        types: [
            ["jigsaw puzzle", "picture puzzle"],
            ["puzzle mat", "puzzle roll-up"],
            ["board game", "tabletop game"],
            ["card game", "deck game"],
            ["building blocks", "construction bricks"],
            ["remote control car", "RC racer"],
            ["plush bear", "stuffed teddy"],
            ["art and craft set", "creative kit"],
        ],
        brands: ["Playmora", "Tinker Tots", "Funwise", "Brickly", "Wonderloft"],
    },
    Department {
        name: "Pet Supplies",
        types: [
            ["dry dog food", "kibble"],
            ["dog bowl", "feeding dish"],
            ["dog leash", "walking lead"],
            ["dog collar", "pet collar"],
            ["chew toy", "dental chew"],
            ["orthopedic pet bed", "dog cushion"],
            ["cat litter", "litter sand"],
            ["cat scratching tree", "cat tower"],
        ],
        brands: ["Pawfect", "Whisker & Tail", "FurEver", "Barkley", "Petwise"],
    },
    Department {
        name: "Musical Instruments",
        types: [
            ["acoustic guitar", "steel-string guitar"],
            ["guitar strings", "string set"],
            ["guitar tuner", "clip-on tuner"],
            ["capo", "guitar clamp"],
            ["distortion pedal", "overdrive effect"],
            ["instrument cable", "patch lead"],
            ["studio microphone", "condenser mic"],
            ["microphone stand", "boom arm"],
        ],
        brands: ["Harmonix", "Tonewood", "Stagecraft", "Resona", "Bluenote Works"],
    },
    Department {
        name: "Grocery",
        types: [
            ["espresso beans", "coffee beans"],
            ["coffee filters", "paper filters"],
            ["green tea", "sencha"],
            ["honey", "raw honey"],
            ["granola", "muesli"],
            ["oat milk", "plant milk"],
            ["dark chocolate", "cacao bar"],
            ["sea salt crackers", "savory crackers"],
        ],
        brands: ["Leaf & Bean", "Brewhaven", "Teaology", "Roastwell", "Goldfield"],
    },
    Department {
        name: "Garden",
        types: [
            ["flower seeds", "seed packet"],
            ["potting soil", "planting mix"],
            ["ceramic planter", "flower pot"],
            ["watering can", "sprinkling can"],
            ["garden hose", "water hose"],
            ["hose nozzle", "spray head"],
            ["pruning shears", "secateurs"],
            ["gardening gloves", "work gloves"],
        ],
        brands: ["Greenthumb", "Bloomfield", "Terra Verde", "Rootstock", "Fernhollow"],
    },
];

/// Styles cut across departments; each is written with one of its words, or left unsaid.
pub const STYLES: [[&str; 3]; 6] = [
    ["minimalist", "sleek", "clean-lined"],
    ["vintage", "retro", "old-school"],
    ["luxury", "deluxe", "high-end"],
    ["eco-friendly", "sustainable", "plant-based"],
    ["sporty", "performance", "athletic"],
    ["playful", "colorful", "whimsical"],
];

/// Price bands: (label in text, lowest price, highest price).
pub const PRICE_BANDS: [(&str, f64, f64); 3] =
    [("budget", 3.0, 15.0), ("mid-range", 15.0, 50.0), ("premium", 50.0, 200.0)];

/// Words that say nothing about what an item is or who buys it.
pub const COLOURS: [&str; 10] = ["black", "white", "grey", "navy", "red", "green", "beige", "blue", "pink", "teal"];
pub const MARKETING: [&str; 8] =
    ["New", "Best Seller", "Limited Edition", "Gift Idea", "Top Rated", "2024 Model", "Bundle", "Classic Edition"];
pub const FILLER: [&str; 10] = [
    "Ships in recyclable packaging.",
    "Backed by a one-year warranty.",
    "Customers love the finish.",
    "Easy to clean and store.",
    "Makes a thoughtful gift.",
    "Designed in our own studio.",
    "Tested for everyday use.",
    "Available while stocks last.",
    "Satisfaction guaranteed or your money back.",
    "See the size chart before ordering.",
];
