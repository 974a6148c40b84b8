//! Go's regular expressions for Rust's engines.
//!
//! Prometheus (label matchers, relabelling), Alertmanager (route and silence matchers), Loki
//! (LogQL filters) and Go templates all compile their patterns with Go's `regexp` (RE2 syntax,
//! Perl flags). Rust's `regex` and `regex-lite` read a similar but different language:
//! `[[0-9]` is a class holding `[` in Go and a nested class in Rust; `&&`, `--` and `~~`
//! inside a class are literal in Go and set operations in Rust; `\d`, `\s`, `\w` and `\b` are
//! ASCII in Go and Unicode in Rust (`\d` matches `٣` there); `\Q…\E`, octal escapes and
//! `a{,3}` (a literal) are Go's; `(?x)`, `(?<n>…)`, `\u0041`, `\<` (a word start), nested
//! repetition `a**` and counts past 1000 are Rust's only.
//!
//! [`translate`] reads a pattern as Go 1.19's `regexp/syntax` parser does (the compiler of
//! Debian's Prometheus 2.42 and Alertmanager 0.25) and writes the same language in a form both
//! Rust engines read with the same meaning, or gives Go's error
//! (`error parsing regexp: missing closing ]: `[a``). Literals that are meta characters in
//! either language are escaped, control characters written as `\x{…}`, and every class item
//! explicitly (Perl and POSIX groups as their ASCII ranges).
//!
//! What stays different: Unicode tables (Go 1.19 has Unicode 13, regex-syntax 15), Go's
//! limits on the size of a compiled program, and `\p{…}` under `regex-lite`, which has no
//! Unicode classes and refuses them.

use std::fmt;

/// Which Rust engine the output is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// The `regex` crate (Unicode-aware by default; ASCII word boundaries are `(?-u:\b)`).
    Regex,
    /// `regex-lite` (ASCII word boundaries already; no Unicode classes).
    Lite,
}

/// Go's parse error: its code and the part of the pattern it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoRegexError {
    /// Go's `ErrorCode` text, e.g. `missing closing ]`.
    pub code: &'static str,
    /// The offending part of the pattern, as Go quotes it.
    pub expr: String,
}

impl fmt::Display for GoRegexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error parsing regexp: {}: `{}`", self.code, self.expr)
    }
}

impl std::error::Error for GoRegexError {}

fn err(code: &'static str, expr: &str) -> GoRegexError {
    GoRegexError {
        code,
        expr: expr.to_string(),
    }
}

const INVALID_CLASS_RANGE: &str = "invalid character class range";
const INVALID_ESCAPE: &str = "invalid escape sequence";
const INVALID_NAMED_CAPTURE: &str = "invalid named capture";
const INVALID_PERL_OP: &str = "invalid or unsupported Perl syntax";
const INVALID_REPEAT_OP: &str = "invalid nested repetition operator";
const INVALID_REPEAT_SIZE: &str = "invalid repeat count";
const MISSING_BRACKET: &str = "missing closing ]";
const MISSING_PAREN: &str = "missing closing )";
const MISSING_REPEAT_ARG: &str = "missing argument to repetition operator";
const TRAILING_BACKSLASH: &str = "trailing backslash at end of expression";
const UNEXPECTED_PAREN: &str = "unexpected )";

/// Go's Unicode general categories (Go 1.19's `unicode.Categories`).
const CATEGORIES: &[&str] = &[
    "C", "Cc", "Cf", "Co", "Cs", "L", "Ll", "Lm", "Lo", "Lt", "Lu", "M", "Mc", "Me", "Mn", "N",
    "Nd", "Nl", "No", "P", "Pc", "Pd", "Pe", "Pf", "Pi", "Po", "Ps", "S", "Sc", "Sk", "Sm", "So",
    "Z", "Zl", "Zp", "Zs",
];

/// Go's scripts (Go 1.19's `unicode.Scripts`, Unicode 13).
const SCRIPTS: &str = "Adlam Ahom Anatolian_Hieroglyphs Arabic Armenian Avestan Balinese Bamum \
    Bassa_Vah Batak Bengali Bhaiksuki Bopomofo Brahmi Braille Buginese Buhid Canadian_Aboriginal \
    Carian Caucasian_Albanian Chakma Cham Cherokee Chorasmian Common Coptic Cuneiform Cypriot \
    Cyrillic Deseret Devanagari Dives_Akuru Dogra Duployan Egyptian_Hieroglyphs Elbasan Elymaic \
    Ethiopic Georgian Glagolitic Gothic Grantha Greek Gujarati Gunjala_Gondi Gurmukhi Han Hangul \
    Hanifi_Rohingya Hanunoo Hatran Hebrew Hiragana Imperial_Aramaic Inherited \
    Inscriptional_Pahlavi Inscriptional_Parthian Javanese Kaithi Kannada Katakana Kayah_Li \
    Kharoshthi Khitan_Small_Script Khmer Khojki Khudawadi Lao Latin Lepcha Limbu Linear_A \
    Linear_B Lisu Lycian Lydian Mahajani Makasar Malayalam Mandaic Manichaean Marchen \
    Masaram_Gondi Medefaidrin Meetei_Mayek Mende_Kikakui Meroitic_Cursive Meroitic_Hieroglyphs \
    Miao Modi Mongolian Mro Multani Myanmar Nabataean Nandinagari New_Tai_Lue Newa Nko Nushu \
    Nyiakeng_Puachue_Hmong Ogham Ol_Chiki Old_Hungarian Old_Italic Old_North_Arabian Old_Permic \
    Old_Persian Old_Sogdian Old_South_Arabian Old_Turkic Oriya Osage Osmanya Pahawh_Hmong \
    Palmyrene Pau_Cin_Hau Phags_Pa Phoenician Psalter_Pahlavi Rejang Runic Samaritan Saurashtra \
    Sharada Shavian Siddham SignWriting Sinhala Sogdian Sora_Sompeng Soyombo Sundanese \
    Syloti_Nagri Syriac Tagalog Tagbanwa Tai_Le Tai_Tham Tai_Viet Takri Tamil Tangut Telugu \
    Thaana Thai Tibetan Tifinagh Tirhuta Ugaritic Vai Wancho Warang_Citi Yezidi Yi \
    Zanabazar_Square";

fn unicode_name_known(name: &str) -> bool {
    name == "Any" || CATEGORIES.contains(&name) || SCRIPTS.split_whitespace().any(|s| s == name)
}

/// Perl classes (`\d`, `\s`, `\w`) and POSIX classes as Go defines them: ASCII ranges.
fn perl_class(c: char) -> Option<(bool, &'static [(u32, u32)])> {
    const D: &[(u32, u32)] = &[(0x30, 0x39)];
    const S: &[(u32, u32)] = &[(0x9, 0xa), (0xc, 0xd), (0x20, 0x20)];
    const W: &[(u32, u32)] = &[(0x30, 0x39), (0x41, 0x5a), (0x5f, 0x5f), (0x61, 0x7a)];
    Some(match c {
        'd' => (false, D),
        'D' => (true, D),
        's' => (false, S),
        'S' => (true, S),
        'w' => (false, W),
        'W' => (true, W),
        _ => return None,
    })
}

fn posix_class(name: &str) -> Option<&'static [(u32, u32)]> {
    Some(match name {
        "alnum" => &[(0x30, 0x39), (0x41, 0x5a), (0x61, 0x7a)],
        "alpha" => &[(0x41, 0x5a), (0x61, 0x7a)],
        "ascii" => &[(0x0, 0x7f)],
        "blank" => &[(0x9, 0x9), (0x20, 0x20)],
        "cntrl" => &[(0x0, 0x1f), (0x7f, 0x7f)],
        "digit" => &[(0x30, 0x39)],
        "graph" => &[(0x21, 0x7e)],
        "lower" => &[(0x61, 0x7a)],
        "print" => &[(0x20, 0x7e)],
        "punct" => &[(0x21, 0x2f), (0x3a, 0x40), (0x5b, 0x60), (0x7b, 0x7e)],
        "space" => &[(0x9, 0xd), (0x20, 0x20)],
        "upper" => &[(0x41, 0x5a)],
        "word" => &[(0x30, 0x39), (0x41, 0x5a), (0x5f, 0x5f), (0x61, 0x7a)],
        "xdigit" => &[(0x30, 0x39), (0x41, 0x46), (0x61, 0x66)],
        _ => return None,
    })
}

/// One character written so that it means itself in Go, `regex` and `regex-lite`, in or out
/// of a class.
fn push_char(out: &mut String, c: char) {
    if c.is_ascii_alphanumeric() || (!c.is_ascii() && !c.is_control()) {
        out.push(c);
    } else if "\\.+*?()|[]{}^$#&-~".contains(c) {
        out.push('\\');
        out.push(c);
    } else if c.is_ascii_graphic() || c == ' ' {
        // Other punctuation is literal everywhere (`\<` is a word start in Rust).
        out.push(c);
    } else {
        out.push_str(&format!("\\x{{{:X}}}", c as u32));
    }
}

fn push_ranges(out: &mut String, ranges: &[(u32, u32)]) {
    for &(lo, hi) in ranges {
        let (lo, hi) = (char::from_u32(lo), char::from_u32(hi));
        if let (Some(lo), Some(hi)) = (lo, hi) {
            push_char(out, lo);
            if hi != lo {
                out.push('-');
                push_char(out, hi);
            }
        }
    }
}

/// A class written whole: `[0-9]`, `[^0-9]`.
fn push_class(out: &mut String, negated: bool, ranges: &[(u32, u32)]) {
    out.push('[');
    if negated {
        out.push('^');
    }
    push_ranges(out, ranges);
    out.push(']');
}

/// The repetition counts nested in an atom, for Go's limit of 1000 copies of the innermost
/// thing (`repeatIsValid`).
#[derive(Debug, Clone, Default)]
struct Reps(Vec<(i64, Reps)>);

impl Reps {
    fn valid(&self, n: i64) -> bool {
        self.0.iter().all(|(m, inner)| {
            if *m == 0 {
                return true;
            }
            if *m > n {
                return false;
            }
            inner.valid(if *m > 0 { n / m } else { n })
        })
    }
}

/// What the next repetition operator applies to.
#[derive(Debug, Clone)]
struct Atom {
    reps: Reps,
}

/// An open group: its atoms so far, for the repetition check when it closes.
#[derive(Debug, Default)]
struct Group {
    /// The enclosing concatenation's repetitions, restored at `)`.
    reps: Reps,
    /// Whether `(?i)` was in force where it opened (restored at `)`).
    fold: bool,
}

struct Parser<'a> {
    whole: &'a str,
    flavor: Flavor,
    out: String,
    groups: Vec<Group>,
    /// The concatenation's atoms since the last `(` or `|`.
    reps: Reps,
    last: Option<Atom>,
    /// The pattern from the last repetition operator on, when it was the previous token.
    last_repeat: Option<&'a str>,
    /// A flag change `(?i)` waiting to be written after a repetition of the atom before it.
    pending: String,
    names: Vec<String>,
    /// Whether `(?i)` is in force (for negated groups inside classes).
    fold: bool,
}

/// `pattern` anchored at both ends as Prometheus, Alertmanager and Loki anchor a matcher's
/// regex (`^(?:pattern)$`), read as Go reads that whole text: an unterminated `\Q` takes the
/// closing `)$` as literals and fails, and errors quote the anchored text, as Prometheus'
/// messages do.
pub fn anchored(pattern: &str, flavor: Flavor) -> Result<String, GoRegexError> {
    translate(&format!("^(?:{pattern})$"), flavor)
}

/// Reads `pattern` as Go's `regexp.Compile` does and writes it for `flavor`.
pub fn translate(pattern: &str, flavor: Flavor) -> Result<String, GoRegexError> {
    let mut p = Parser {
        whole: pattern,
        flavor,
        out: String::with_capacity(pattern.len() + 8),
        groups: Vec::new(),
        reps: Reps::default(),
        last: None,
        last_repeat: None,
        pending: String::new(),
        names: Vec::new(),
        fold: false,
    };
    p.run()?;
    Ok(p.out)
}

impl<'a> Parser<'a> {
    fn run(&mut self) -> Result<(), GoRegexError> {
        let mut t = self.whole;
        while let Some(c) = t.chars().next() {
            let mut repeat: Option<&'a str> = None;
            match c {
                '(' if t[1..].starts_with('?') => t = self.perl_flags(t)?,
                '(' => {
                    self.open();
                    self.out.push('(');
                    t = &t[1..];
                }
                '|' => {
                    self.flush();
                    self.end_atom();
                    self.out.push('|');
                    t = &t[1..];
                }
                ')' => {
                    self.close()?;
                    t = &t[1..];
                }
                '^' | '$' | '.' => {
                    self.atom_start();
                    self.out.push(c);
                    t = &t[1..];
                }
                '[' => {
                    self.atom_start();
                    t = self.class(t)?;
                }
                '*' | '+' | '?' => {
                    let before = t;
                    t = self.repeat(&t[1..], before, -1, -1)?;
                    repeat = Some(before);
                }
                '{' => match parse_repeat(t) {
                    None => {
                        self.atom_start();
                        push_char(&mut self.out, '{');
                        t = &t[1..];
                    }
                    Some((min, max, after)) => {
                        let before = t;
                        if !(0..=1000).contains(&min) || max > 1000 || (max >= 0 && min > max) {
                            return Err(err(
                                INVALID_REPEAT_SIZE,
                                &before[..before.len() - after.len()],
                            ));
                        }
                        t = self.repeat(after, before, min, max)?;
                        repeat = Some(before);
                    }
                },
                '\\' => t = self.escape(t)?,
                _ => {
                    self.atom_start();
                    push_char(&mut self.out, c);
                    t = &t[c.len_utf8()..];
                }
            }
            self.last_repeat = repeat;
        }
        self.flush();
        if !self.groups.is_empty() {
            return Err(err(MISSING_PAREN, self.whole));
        }
        Ok(())
    }

    /// Writes a waiting flag change before anything but a repetition.
    fn flush(&mut self) {
        if !self.pending.is_empty() {
            let p = std::mem::take(&mut self.pending);
            self.out.push_str(&p);
        }
    }

    /// The atom before is done: its repetitions join the concatenation's.
    fn end_atom(&mut self) {
        if let Some(a) = self.last.take() {
            self.reps.0.extend(a.reps.0);
        }
    }

    /// A new atom begins here.
    fn atom_start(&mut self) {
        self.flush();
        self.end_atom();
        self.last = Some(Atom {
            reps: Reps::default(),
        });
    }

    fn open(&mut self) {
        self.flush();
        self.end_atom();
        let reps = std::mem::take(&mut self.reps);
        self.groups.push(Group {
            reps,
            fold: self.fold,
        });
    }

    fn close(&mut self) -> Result<(), GoRegexError> {
        self.flush();
        let Some(g) = self.groups.pop() else {
            return Err(err(UNEXPECTED_PAREN, self.whole));
        };
        self.end_atom();
        let inner = std::mem::replace(&mut self.reps, g.reps);
        self.fold = g.fold;
        self.out.push(')');
        self.last = Some(Atom { reps: inner });
        Ok(())
    }

    /// A repetition operator at `before`; `after` follows its count. `min`/`max` are -1 for
    /// `*`, `+`, `?`.
    fn repeat(
        &mut self,
        after: &'a str,
        before: &'a str,
        min: i64,
        max: i64,
    ) -> Result<&'a str, GoRegexError> {
        let mut after = after;
        if let Some(rest) = after.strip_prefix('?') {
            after = rest;
        }
        if let Some(last) = self.last_repeat {
            return Err(err(INVALID_REPEAT_OP, &last[..last.len() - after.len()]));
        }
        let op = &before[..before.len() - after.len()];
        let Some(atom) = self.last.as_mut() else {
            return Err(err(MISSING_REPEAT_ARG, op));
        };
        if min >= 0 {
            let m = if max < 0 { min } else { max };
            // A count of 1 divides nothing and one of 0 ends Go's check, so only counts of 2
            // or more nest (at most ten deep under the limit: hostile `((a{1}){1})…` stays
            // flat).
            match m {
                0 => atom.reps = Reps::default(),
                1 => {}
                _ => {
                    let reps = Reps(vec![(m, std::mem::take(&mut atom.reps))]);
                    if !reps.valid(1000) {
                        return Err(err(INVALID_REPEAT_SIZE, op));
                    }
                    atom.reps = reps;
                }
            }
        }
        self.out.push_str(op);
        Ok(after)
    }

    /// `(?flags)`, `(?flags:`, `(?P<name>`.
    fn perl_flags(&mut self, s: &'a str) -> Result<&'a str, GoRegexError> {
        if s.len() > 4 && s.as_bytes()[2] == b'P' && s.as_bytes()[3] == b'<' {
            let Some(end) = s.find('>') else {
                return Err(err(INVALID_NAMED_CAPTURE, s));
            };
            let name = &s[4..end];
            if name.is_empty() || !name.chars().all(|c| c == '_' || c.is_ascii_alphanumeric()) {
                return Err(err(INVALID_NAMED_CAPTURE, &s[..end + 1]));
            }
            self.open();
            // Rust wants a name that starts with a letter or `_` and appears once; Go takes
            // any word and repeats. The group still captures (numbering is kept).
            let rust_ok = !name.starts_with(|c: char| c.is_ascii_digit())
                && !self.names.iter().any(|n| n == name);
            if rust_ok {
                self.names.push(name.to_string());
                self.out.push_str(&format!("(?P<{name}>"));
            } else {
                self.out.push('(');
            }
            return Ok(&s[end + 1..]);
        }
        let mut t = &s[2..];
        // Flag letters mentioned, with their final value.
        let mut set: Vec<(char, bool)> = Vec::new();
        let mut negate = false;
        let mut saw_flag = false;
        while let Some(c) = t.chars().next() {
            t = &t[c.len_utf8()..];
            match c {
                'i' | 'm' | 's' | 'U' => {
                    set.retain(|(f, _)| *f != c);
                    set.push((c, !negate));
                    saw_flag = true;
                }
                '-' => {
                    if negate {
                        break;
                    }
                    negate = true;
                    saw_flag = false;
                }
                ':' | ')' => {
                    if negate && !saw_flag {
                        break;
                    }
                    let on: String = set.iter().filter(|(_, v)| *v).map(|(f, _)| *f).collect();
                    let off: String = set.iter().filter(|(_, v)| !*v).map(|(f, _)| *f).collect();
                    let mut flags = on;
                    if !off.is_empty() {
                        flags.push('-');
                        flags.push_str(&off);
                    }
                    if let Some((_, on)) = set.iter().find(|(f, _)| *f == 'i') {
                        // `(?i:` opens first, so the group restores the fold outside it.
                        if c == ':' {
                            self.open();
                            self.fold = *on;
                            self.out.push_str(&format!("(?{flags}:"));
                            return Ok(t);
                        }
                        self.fold = *on;
                    }
                    if c == ':' {
                        self.open();
                        self.out.push_str(&format!("(?{flags}:"));
                    } else if !flags.is_empty() {
                        // Go applies a flag change without making an atom: `a(?i)*` repeats
                        // `a`. Written after the next repetition, it means the same to Rust.
                        self.pending.push_str(&format!("(?{flags})"));
                    }
                    return Ok(t);
                }
                _ => break,
            }
        }
        Err(err(INVALID_PERL_OP, &s[..s.len() - t.len()]))
    }

    /// A backslash outside a class.
    fn escape(&mut self, t: &'a str) -> Result<&'a str, GoRegexError> {
        let next = t[1..].chars().next();
        match next {
            Some('A') | Some('z') => {
                self.atom_start();
                self.out.push_str(&t[..2]);
                return Ok(&t[2..]);
            }
            Some(c @ ('b' | 'B')) => {
                self.atom_start();
                match self.flavor {
                    Flavor::Regex => self.out.push_str(&format!("(?-u:\\{c})")),
                    Flavor::Lite => self.out.push_str(&t[..2]),
                }
                return Ok(&t[2..]);
            }
            Some('C') => return Err(err(INVALID_ESCAPE, &t[..2])),
            Some('Q') => {
                let body = &t[2..];
                let (lit, rest) = match body.find("\\E") {
                    Some(i) => (&body[..i], &body[i + 2..]),
                    None => (body, ""),
                };
                for c in lit.chars() {
                    self.atom_start();
                    push_char(&mut self.out, c);
                }
                return Ok(rest);
            }
            Some('p' | 'P') => {
                self.atom_start();
                let (class, rest) = unicode_class(t)?;
                self.out.push_str(&class);
                return Ok(rest);
            }
            Some(c) => {
                if let Some((neg, ranges)) = perl_class(c) {
                    self.atom_start();
                    push_class(&mut self.out, neg, ranges);
                    return Ok(&t[2..]);
                }
            }
            None => {}
        }
        let (c, rest) = parse_escape(t)?;
        self.atom_start();
        push_char(&mut self.out, c);
        Ok(rest)
    }

    /// `[...]` at the start of `s`.
    fn class(&mut self, s: &'a str) -> Result<&'a str, GoRegexError> {
        let mut t = &s[1..];
        let mut body = String::new();
        let negated = t.starts_with('^');
        if negated {
            t = &t[1..];
        }
        let mut first = true;
        // Rust wants at least one item; Go's `[^\x00-\x{10FFFF}]` is an empty class too.
        loop {
            if t.is_empty() {
                return Err(err(MISSING_BRACKET, s));
            }
            if t.starts_with(']') && !first {
                break;
            }
            first = false;
            if t.len() > 2
                && t.starts_with("[:")
                && let Some(i) = t[2..].find(":]")
            {
                let name = &t[..i + 4];
                let inner = &t[2..i + 2];
                let (neg, base) = match inner.strip_prefix('^') {
                    Some(b) => (true, b),
                    None => (false, inner),
                };
                let Some(ranges) = posix_class(base) else {
                    return Err(err(INVALID_CLASS_RANGE, name));
                };
                push_group(&mut body, neg, ranges, self.fold);
                t = &t[i + 4..];
                continue;
            }
            if t.starts_with("\\p") || t.starts_with("\\P") {
                let (class, rest) = unicode_class(t)?;
                body.push_str(&class);
                t = rest;
                continue;
            }
            if t.starts_with('\\')
                && let Some((neg, ranges)) = t[1..].chars().next().and_then(perl_class)
            {
                push_group(&mut body, neg, ranges, self.fold);
                t = &t[2..];
                continue;
            }
            let rng = t;
            let (lo, rest) = class_char(t, s)?;
            t = rest;
            let mut hi = lo;
            if t.len() >= 2 && t.starts_with('-') && !t[1..].starts_with(']') {
                let (h, rest) = class_char(&t[1..], s)?;
                t = rest;
                if h < lo {
                    return Err(err(INVALID_CLASS_RANGE, &rng[..rng.len() - t.len()]));
                }
                hi = h;
            }
            push_ranges(&mut body, &[(lo as u32, hi as u32)]);
        }
        self.out.push('[');
        if negated {
            self.out.push('^');
        }
        self.out.push_str(&body);
        self.out.push(']');
        Ok(&t[1..])
    }
}

/// A Perl or POSIX group inside a class, as explicit ranges. A negated one is the complement
/// of the group — folded first under `(?i)`, as Go does (`(?i)[\W]` holds neither `K` nor
/// U+212A KELVIN SIGN) — which is closed under case folding, so Rust's folding of the whole
/// class adds nothing to it.
fn push_group(body: &mut String, negated: bool, ranges: &[(u32, u32)], fold: bool) {
    if !negated {
        push_ranges(body, ranges);
        return;
    }
    let mut set: Vec<(u32, u32)> = ranges.to_vec();
    if fold {
        for &(lo, hi) in ranges {
            for c in lo..=hi {
                let Some(ch) = char::from_u32(c) else {
                    continue;
                };
                if ch.is_ascii_alphabetic() {
                    let other = (c ^ 0x20, c ^ 0x20);
                    set.push(other);
                }
                match ch.to_ascii_lowercase() {
                    'k' => set.push((0x212A, 0x212A)),
                    's' => set.push((0x17F, 0x17F)),
                    _ => {}
                }
            }
        }
    }
    set.sort_unstable();
    let mut complement = Vec::new();
    let mut next = 0u32;
    for (lo, hi) in set {
        if lo > next {
            complement.push((next, lo - 1));
        }
        next = next.max(hi + 1);
    }
    if next <= 0x10FFFF {
        complement.push((next, 0x10FFFF));
    }
    push_ranges(body, &complement);
}

/// `\pL`, `\p{Greek}`, `\P{^Greek}` at the start of `s`, written as `\p{Name}` / `\P{Name}`.
fn unicode_class(s: &str) -> Result<(String, &str), GoRegexError> {
    let mut negated = s.as_bytes()[1] == b'P';
    let t = &s[2..];
    let Some(c) = t.chars().next() else {
        // `\p` at the end: an empty name.
        return Err(err(INVALID_CLASS_RANGE, s));
    };
    let (seq, mut name, rest) = if c != '{' {
        let n = c.len_utf8();
        (&s[..2 + n], &t[..n], &t[n..])
    } else {
        let Some(end) = s.find('}') else {
            return Err(err(INVALID_CLASS_RANGE, s));
        };
        (&s[..end + 1], &s[3..end], &s[end + 1..])
    };
    if let Some(n) = name.strip_prefix('^') {
        negated = !negated;
        name = n;
    }
    if !unicode_name_known(name) {
        return Err(err(INVALID_CLASS_RANGE, seq));
    }
    let p = if negated { 'P' } else { 'p' };
    Ok((format!("\\{p}{{{name}}}"), rest))
}

/// One character of a class (an escape or itself).
fn class_char<'s>(t: &'s str, whole: &str) -> Result<(char, &'s str), GoRegexError> {
    match t.chars().next() {
        None => Err(err(MISSING_BRACKET, whole)),
        Some('\\') => parse_escape(t),
        Some(c) => Ok((c, &t[c.len_utf8()..])),
    }
}

/// Go's `parseEscape`: a single-character escape at the start of `s`.
fn parse_escape(s: &str) -> Result<(char, &str), GoRegexError> {
    let t = &s[1..];
    let Some(c) = t.chars().next() else {
        return Err(err(TRAILING_BACKSLASH, ""));
    };
    let mut t = &t[c.len_utf8()..];
    let bad = |t: &str| err(INVALID_ESCAPE, &s[..s.len() - t.len()]);
    let octal = |b: Option<&u8>| matches!(b, Some(b'0'..=b'7'));
    match c {
        '1'..='7' if !octal(t.as_bytes().first()) => Err(bad(t)),
        '0'..='7' => {
            let mut r = c as u32 - '0' as u32;
            for _ in 1..3 {
                if !octal(t.as_bytes().first()) {
                    break;
                }
                r = r * 8 + (t.as_bytes()[0] - b'0') as u32;
                t = &t[1..];
            }
            Ok((char::from_u32(r).unwrap_or('\0'), t))
        }
        'x' => {
            let Some(c1) = t.chars().next() else {
                return Err(bad(t));
            };
            t = &t[c1.len_utf8()..];
            if c1 == '{' {
                let mut r: u32 = 0;
                let mut n = 0;
                loop {
                    let Some(d) = t.chars().next() else {
                        return Err(bad(t));
                    };
                    t = &t[d.len_utf8()..];
                    if d == '}' {
                        break;
                    }
                    let Some(v) = d.to_digit(16) else {
                        return Err(bad(t));
                    };
                    r = r * 16 + v;
                    if r > 0x10FFFF {
                        return Err(bad(t));
                    }
                    n += 1;
                }
                // Go accepts a surrogate's number, which no valid text holds; Rust has no
                // such char, and U+FFFD stands in (so it matches that character, where Go's
                // matches nothing).
                return match (n, char::from_u32(r)) {
                    (0, _) => Err(bad(t)),
                    (_, Some(ch)) => Ok((ch, t)),
                    (_, None) => Ok(('\u{FFFD}', t)),
                };
            }
            let Some(c2) = t.chars().next() else {
                return Err(bad(t));
            };
            t = &t[c2.len_utf8()..];
            match (c1.to_digit(16), c2.to_digit(16)) {
                (Some(x), Some(y)) => Ok((char::from_u32(x * 16 + y).unwrap_or('\0'), t)),
                _ => Err(bad(t)),
            }
        }
        'a' => Ok(('\x07', t)),
        'f' => Ok(('\x0C', t)),
        'n' => Ok(('\n', t)),
        'r' => Ok(('\r', t)),
        't' => Ok(('\t', t)),
        'v' => Ok(('\x0B', t)),
        c if c.is_ascii() && !c.is_ascii_alphanumeric() => Ok((c, t)),
        _ => Err(bad(t)),
    }
}

/// Go's `parseRepeat`: `{n}`, `{n,}`, `{n,m}` at the start of `s`, with -1 for a number too
/// large (and for an open maximum); `None` when it is not a repetition (then `{` is literal).
fn parse_repeat(s: &str) -> Option<(i64, i64, &str)> {
    let s = s.strip_prefix('{')?;
    let (min, s) = parse_int(s)?;
    let (max, s) = if let Some(s) = s.strip_prefix(',') {
        if s.starts_with('}') {
            (-1, s)
        } else {
            let (max, s) = parse_int(s)?;
            if max < 0 {
                return Some((-1, max, s.strip_prefix('}')?));
            }
            (max, s)
        }
    } else {
        (min, s)
    };
    Some((min, max, s.strip_prefix('}')?))
}

fn parse_int(s: &str) -> Option<(i64, &str)> {
    let b = s.as_bytes();
    if !b.first()?.is_ascii_digit() {
        return None;
    }
    if b.len() >= 2 && b[0] == b'0' && b[1].is_ascii_digit() {
        return None;
    }
    let n = b.iter().take_while(|c| c.is_ascii_digit()).count();
    let mut v: i64 = 0;
    for &d in &b[..n] {
        if v >= 100_000_000 {
            v = -1;
            break;
        }
        v = v * 10 + (d - b'0') as i64;
    }
    Some((v, &s[n..]))
}

#[cfg(test)]
mod tests;
