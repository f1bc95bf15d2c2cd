//! Caller rules, the `X-Skills` SIP header, and business hours. Pure: no clock, no IO
//! (times are Unix milliseconds passed in).
//!
//! - [`CallerPattern`] / [`CallerRule`] / [`CallerRules`]: block callers or give them a
//!   priority and required skills by caller number.
//! - [`parse_skills_header`]: the value of an `X-Skills` header
//!   (`english=5, billing=3`).
//! - [`BusinessHours`]: a weekly schedule with a fixed UTC offset and closed dates;
//!   [`BusinessHours::is_open`] and [`BusinessHours::next_change`] (for timers). The
//!   calendar arithmetic ([`civil_from_days`], [`days_from_civil`]) is Howard Hinnant's,
//!   with no date crate.

use serde::{Deserialize, Serialize};
use smol_str::SmolStr;
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// Longest text kept in an error message; longer input is cut with `…`.
const ERROR_TEXT_MAX: usize = 64;

fn clip(s: &str) -> String {
    match s.char_indices().nth(ERROR_TEXT_MAX) {
        None => s.to_owned(),
        Some((i, _)) => format!("{}…", &s[..i]),
    }
}

// ---------------------------------------------------------------------------------------
// Caller patterns and rules
// ---------------------------------------------------------------------------------------

/// Longest caller pattern accepted (in characters, separators included).
pub const MAX_PATTERN_LEN: usize = 64;

/// Visual separators ignored in caller numbers and in patterns: space, tab, `-`, `.`,
/// `(`, `)`.
fn is_separator(c: char) -> bool {
    matches!(c, ' ' | '\t' | '-' | '.' | '(' | ')')
}

/// A caller number pattern.
///
/// - `+4420123`: exactly this number;
/// - `+4420*`: every number starting with `+4420` (including `+4420` itself); `*` is
///   only allowed at the end;
/// - `?`: any single character (`+44??123`);
/// - `*` alone: every number, even an empty one.
///
/// Other characters allowed: ASCII letters and digits, `+` and `#` (so SIP user parts
/// like `anonymous` can be matched). Visual separators (space, tab, `-`, `.`, `(`, `)`)
/// are ignored both in the pattern and in the numbers matched, so `+44 20-123` matches
/// the pattern `+4420123`; letters compare case-insensitively. A literal `*` (a keypad
/// star) cannot be matched except by a glob.
///
/// Serialized as its text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CallerPattern {
    text: SmolStr,
    body: SmolStr,
    prefix: bool,
}

/// A caller pattern that does not parse; every variant names the pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallerPatternError {
    /// Nothing but separators.
    #[error("caller pattern `{pattern}` is empty")]
    Empty {
        /// The pattern.
        pattern: String,
    },
    /// Longer than [`MAX_PATTERN_LEN`].
    #[error("caller pattern `{pattern}` is longer than {max} characters")]
    TooLong {
        /// The pattern (cut).
        pattern: String,
        /// [`MAX_PATTERN_LEN`].
        max: usize,
    },
    /// A character that may not appear in a pattern.
    #[error("caller pattern `{pattern}`: invalid character `{ch}` (allowed: letters, digits, `+`, `#`, `?`, a final `*`)")]
    InvalidChar {
        /// The pattern.
        pattern: String,
        /// The character.
        ch: char,
    },
    /// A `*` before the end.
    #[error("caller pattern `{pattern}`: `*` is only allowed at the end")]
    MisplacedStar {
        /// The pattern.
        pattern: String,
    },
}

impl CallerPattern {
    /// Parses a pattern (surrounding whitespace is ignored).
    pub fn parse(text: &str) -> Result<Self, CallerPatternError> {
        let text = text.trim();
        if text.chars().count() > MAX_PATTERN_LEN {
            return Err(CallerPatternError::TooLong {
                pattern: clip(text),
                max: MAX_PATTERN_LEN,
            });
        }
        let mut body = String::with_capacity(text.len());
        let mut prefix = false;
        for c in text.chars().filter(|c| !is_separator(*c)) {
            if prefix {
                return Err(CallerPatternError::MisplacedStar {
                    pattern: text.to_owned(),
                });
            }
            match c {
                '*' => prefix = true,
                c if c.is_ascii_alphanumeric() || matches!(c, '+' | '#' | '?') => {
                    body.push(c.to_ascii_lowercase())
                }
                ch => {
                    return Err(CallerPatternError::InvalidChar {
                        pattern: text.to_owned(),
                        ch,
                    })
                }
            }
        }
        if body.is_empty() && !prefix {
            return Err(CallerPatternError::Empty {
                pattern: text.to_owned(),
            });
        }
        Ok(Self {
            text: SmolStr::new(text),
            body: SmolStr::new(body),
            prefix,
        })
    }

    /// The pattern that matches every number (`*`).
    pub fn any() -> Self {
        Self {
            text: SmolStr::new_static("*"),
            body: SmolStr::default(),
            prefix: true,
        }
    }

    /// The pattern as written (trimmed).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether it matches every number.
    pub fn matches_all(&self) -> bool {
        self.prefix && self.body.is_empty()
    }

    /// Whether `number` matches (separators in `number` ignored, letters
    /// case-insensitive).
    pub fn matches(&self, number: &str) -> bool {
        let mut num = number.chars().filter(|c| !is_separator(*c));
        for p in self.body.chars() {
            match num.next() {
                Some(c) if p == '?' || c.eq_ignore_ascii_case(&p) => {}
                _ => return false,
            }
        }
        self.prefix || num.next().is_none()
    }
}

impl FromStr for CallerPattern {
    type Err = CallerPatternError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for CallerPattern {
    type Error = CallerPatternError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<CallerPattern> for String {
    fn from(p: CallerPattern) -> Self {
        p.text.to_string()
    }
}

impl fmt::Display for CallerPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// What to do with callers whose number matches a pattern.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallerRule {
    /// Which callers.
    pub pattern: CallerPattern,
    /// Routing priority for them (higher is served first).
    #[serde(default)]
    pub priority: Option<i32>,
    /// Skills their calls require, with minimum levels.
    #[serde(default)]
    pub skills: Vec<(SmolStr, u8)>,
    /// Reject their calls.
    #[serde(default)]
    pub block: bool,
}

impl CallerRule {
    /// A rule that does nothing yet.
    pub fn new(pattern: CallerPattern) -> Self {
        Self {
            pattern,
            priority: None,
            skills: Vec::new(),
            block: false,
        }
    }

    /// With a priority.
    pub fn with_priority(mut self, priority: i32) -> Self {
        self.priority = Some(priority);
        self
    }

    /// With a required skill.
    pub fn with_skill(mut self, name: impl Into<SmolStr>, min_level: u8) -> Self {
        self.skills.push((name.into(), min_level));
        self
    }

    /// Blocking.
    pub fn blocking(mut self) -> Self {
        self.block = true;
        self
    }
}

/// The outcome of [`CallerRules::evaluate`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallerVerdict {
    /// A blocking rule matched: reject the call.
    pub blocked: bool,
    /// The index of the first blocking rule that matched.
    pub blocked_by: Option<usize>,
    /// The highest priority among the matching rules (`None`: no matching rule sets
    /// one, or blocked).
    pub priority: Option<i32>,
    /// The skills required by the matching rules, each with the highest minimum level
    /// any of them asks for, in order of first appearance (empty when blocked).
    pub skills: Vec<(SmolStr, u8)>,
}

/// An ordered list of [`CallerRule`]s.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CallerRules {
    rules: Vec<CallerRule>,
}

impl CallerRules {
    /// The rules, in order.
    pub fn new(rules: Vec<CallerRule>) -> Self {
        Self { rules }
    }

    /// Appends a rule.
    pub fn push(&mut self, rule: CallerRule) {
        self.rules.push(rule);
    }

    /// The rules.
    pub fn rules(&self) -> &[CallerRule] {
        &self.rules
    }

    /// What applies to a caller: if any matching rule blocks, the call is blocked (the
    /// first such rule is reported; priority and skills are then empty, whatever the
    /// rules say). Otherwise the priority is the highest among matching rules and the
    /// skills are merged, keeping the highest minimum level per skill.
    pub fn evaluate(&self, number: &str) -> CallerVerdict {
        let mut v = CallerVerdict::default();
        for (i, rule) in self.rules.iter().enumerate() {
            if !rule.pattern.matches(number) {
                continue;
            }
            if rule.block {
                return CallerVerdict {
                    blocked: true,
                    blocked_by: Some(i),
                    priority: None,
                    skills: Vec::new(),
                };
            }
            if let Some(p) = rule.priority {
                v.priority = Some(v.priority.map_or(p, |q| q.max(p)));
            }
            merge_skills(&mut v.skills, &rule.skills);
        }
        v
    }
}

fn merge_skills(into: &mut Vec<(SmolStr, u8)>, from: &[(SmolStr, u8)]) {
    for (name, level) in from {
        match into.iter_mut().find(|(n, _)| n == name) {
            Some((_, l)) => *l = (*l).max(*level),
            None => into.push((name.clone(), *level)),
        }
    }
}

// ---------------------------------------------------------------------------------------
// X-Skills header
// ---------------------------------------------------------------------------------------

/// Most distinct skills in an `X-Skills` header.
pub const MAX_HEADER_SKILLS: usize = 32;
/// Longest skill name in an `X-Skills` header.
pub const MAX_SKILL_NAME_LEN: usize = 64;
/// Highest skill level in an `X-Skills` header.
pub const MAX_SKILL_LEVEL: u8 = 100;

/// An `X-Skills` header value that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SkillsHeaderError {
    /// An item with a level but no name (`=5`).
    #[error("X-Skills: item `{item}` has no skill name")]
    MissingName {
        /// The item (cut).
        item: String,
    },
    /// A name with a character outside `[A-Za-z0-9_-]`.
    #[error("X-Skills: skill name `{name}` has a character outside [A-Za-z0-9_-]")]
    InvalidName {
        /// The name (cut).
        name: String,
    },
    /// A name longer than [`MAX_SKILL_NAME_LEN`].
    #[error("X-Skills: skill name `{name}` is longer than {max} characters")]
    NameTooLong {
        /// The name (cut).
        name: String,
        /// [`MAX_SKILL_NAME_LEN`].
        max: usize,
    },
    /// A level that is not a whole number from 0 to [`MAX_SKILL_LEVEL`].
    #[error("X-Skills: level `{level}` of skill `{name}` is not a whole number from 0 to 100")]
    InvalidLevel {
        /// The skill.
        name: String,
        /// The level as written (cut).
        level: String,
    },
    /// More than [`MAX_HEADER_SKILLS`] distinct skills.
    #[error("X-Skills: more than {max} skills")]
    TooMany {
        /// [`MAX_HEADER_SKILLS`].
        max: usize,
    },
}

/// Parses an `X-Skills` header value: skills separated by `,` or `;`, each `name`,
/// `name=level` or `name:level` (spaces around the parts are ignored, empty items are
/// skipped, so an empty value is no skills).
///
/// - names: 1 to [`MAX_SKILL_NAME_LEN`] characters of `[A-Za-z0-9_-]`, kept as written
///   (case-sensitive);
/// - levels: a whole number from 0 to [`MAX_SKILL_LEVEL`] (100; more is an error, not
///   clamped); no level means 1;
/// - a skill named twice keeps the highest level; at most [`MAX_HEADER_SKILLS`] distinct
///   skills.
///
/// The result keeps the order of first appearance.
///
/// ```
/// use call_engine_orchestrator::rules::parse_skills_header;
/// let skills = parse_skills_header("english:5; billing").unwrap();
/// assert_eq!(skills, vec![("english".into(), 5), ("billing".into(), 1)]);
/// assert!(parse_skills_header("english=500").is_err());
/// ```
pub fn parse_skills_header(value: &str) -> Result<Vec<(SmolStr, u8)>, SkillsHeaderError> {
    let mut out: Vec<(SmolStr, u8)> = Vec::new();
    for item in value.split([',', ';']) {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let (name, level) = match item.split_once(['=', ':']) {
            Some((n, l)) => (n.trim(), Some(l.trim())),
            None => (item, None),
        };
        if name.is_empty() {
            return Err(SkillsHeaderError::MissingName { item: clip(item) });
        }
        if name.len() > MAX_SKILL_NAME_LEN {
            return Err(SkillsHeaderError::NameTooLong {
                name: clip(name),
                max: MAX_SKILL_NAME_LEN,
            });
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(SkillsHeaderError::InvalidName { name: clip(name) });
        }
        let level = match level {
            None => 1,
            Some(l) => parse_level(l).ok_or_else(|| SkillsHeaderError::InvalidLevel {
                name: name.to_owned(),
                level: clip(l),
            })?,
        };
        let full = out.len() >= MAX_HEADER_SKILLS;
        match out.iter_mut().find(|(n, _)| n == name) {
            Some((_, l)) => *l = (*l).max(level),
            None if full => {
                return Err(SkillsHeaderError::TooMany {
                    max: MAX_HEADER_SKILLS,
                })
            }
            None => out.push((SmolStr::new(name), level)),
        }
    }
    Ok(out)
}

fn parse_level(s: &str) -> Option<u8> {
    if s.is_empty() || s.len() > 3 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u8>().ok().filter(|l| *l <= MAX_SKILL_LEVEL)
}

// ---------------------------------------------------------------------------------------
// Calendar
// ---------------------------------------------------------------------------------------

const DAY_MS: i128 = 86_400_000;
const MINUTE_MS: i128 = 60_000;
const DAY_MINUTES: u16 = 1440;

/// The proleptic Gregorian date `(year, month 1..=12, day 1..=31)` of a day counted
/// from 1970-01-01 (day 0); Howard Hinnant's `civil_from_days`.
pub fn civil_from_days(days: i64) -> (i64, u8, u8) {
    let z = days.saturating_add(719_468);
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let d = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m as u8, d as u8)
}

/// The day, counted from 1970-01-01 (day 0), of a proleptic Gregorian date; Howard
/// Hinnant's `days_from_civil`. The date is not validated (see [`days_in_month`]).
/// Saturates at the ends of `i64` for absurd years.
pub fn days_from_civil(year: i64, month: u8, day: u8) -> i64 {
    // In i128: no overflow whatever the year.
    let m = i128::from(month);
    let y = i128::from(year) - i128::from(m <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400; // [0, 399]
    let mp = (m + 9) % 12; // March = 0
    let doy = (153 * mp + 2) / 5 + i128::from(day) - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    let days = era * 146_097 + doe - 719_468;
    i64::try_from(days).unwrap_or(if days < 0 { i64::MIN } else { i64::MAX })
}

/// Days in a month of a year (0 for a month outside 1..=12).
pub fn days_in_month(year: i64, month: u8) -> u8 {
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => 0,
    }
}

/// A day of the week.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Weekday {
    /// Monday.
    Mon,
    /// Tuesday.
    Tue,
    /// Wednesday.
    Wed,
    /// Thursday.
    Thu,
    /// Friday.
    Fri,
    /// Saturday.
    Sat,
    /// Sunday.
    Sun,
}

impl Weekday {
    /// Monday to Sunday.
    pub const ALL: [Weekday; 7] = [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
        Weekday::Sat,
        Weekday::Sun,
    ];

    /// The weekday of a day counted from 1970-01-01 (a Thursday).
    pub fn from_days(days: i64) -> Weekday {
        Self::ALL[(days.rem_euclid(7) as usize + 3) % 7]
    }

    /// 0 for Monday … 6 for Sunday.
    pub fn index(self) -> usize {
        self as usize
    }

    /// `mon`, `tue`, …
    pub fn name(self) -> &'static str {
        ["mon", "tue", "wed", "thu", "fri", "sat", "sun"][self.index()]
    }

    /// Parses `mon` or `monday` (any case).
    pub fn parse(s: &str) -> Option<Weekday> {
        let l = s.to_ascii_lowercase();
        Self::ALL.into_iter().find(|d| {
            l == d.name()
                || l == [
                    "monday",
                    "tuesday",
                    "wednesday",
                    "thursday",
                    "friday",
                    "saturday",
                    "sunday",
                ][d.index()]
        })
    }
}

impl fmt::Display for Weekday {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A local date and time, as computed by [`BusinessHours::local_time`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LocalDateTime {
    /// Year (proleptic Gregorian).
    pub year: i64,
    /// Month, 1..=12.
    pub month: u8,
    /// Day of the month, 1..=31.
    pub day: u8,
    /// Day of the week.
    pub weekday: Weekday,
    /// Minutes since local midnight, 0..1440.
    pub minute_of_day: u16,
    /// Milliseconds since local midnight, 0..86 400 000.
    pub ms_of_day: u32,
}

// ---------------------------------------------------------------------------------------
// Business hours
// ---------------------------------------------------------------------------------------

/// Largest UTC offset accepted, in minutes (±18 h).
pub const MAX_UTC_OFFSET_MINUTES: i32 = 18 * 60;

/// Business hours that do not parse; every variant names the offending text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusinessHoursError {
    /// A line with days but no interval.
    #[error("business hours line `{line}`: expected `<days> HH:MM-HH:MM [HH:MM-HH:MM …]`")]
    MissingIntervals {
        /// The line (cut).
        line: String,
    },
    /// Not a day or day range.
    #[error("business hours: unknown day `{text}` (expected mon, tue, wed, thu, fri, sat, sun, a range like mon-fri, a list like sat,sun, or daily)")]
    UnknownDay {
        /// The text (cut).
        text: String,
    },
    /// Not an `HH:MM-HH:MM` interval.
    #[error(
        "business hours: invalid interval `{text}` (expected HH:MM-HH:MM from 00:00 to 24:00)"
    )]
    BadInterval {
        /// The text (cut).
        text: String,
    },
    /// An interval whose end is not after its start (intervals may not cross midnight).
    #[error("business hours: interval `{text}` is empty or crosses midnight (the end must be after the start; split it at 24:00)")]
    EmptyInterval {
        /// The text (cut).
        text: String,
    },
    /// Not a valid `YYYY-MM-DD` date.
    #[error("business hours: invalid date `{text}` (expected YYYY-MM-DD)")]
    BadDate {
        /// The text (cut).
        text: String,
    },
    /// A UTC offset beyond ±[`MAX_UTC_OFFSET_MINUTES`].
    #[error("business hours: UTC offset of {minutes} minutes is out of range (at most ±1080)")]
    BadOffset {
        /// The offset.
        minutes: i32,
    },
}

/// A weekly schedule of open intervals in local time (a fixed UTC offset, no daylight
/// saving), with closed dates (holidays, closed all local day).
///
/// Text form ([`BusinessHours::parse`]): lines (separated by newlines or `;`) of
/// `<days> <intervals>`, e.g.
///
/// ```text
/// mon-fri 08:00-12:00 13:00-18:00
/// sat 09:00-12:00      # a comment runs to the end of the line
/// ```
///
/// - days: `mon` … `sun` (or full names, any case), ranges `mon-fri` (wrapping:
///   `fri-mon` is fri, sat, sun, mon), lists `sat,sun`, or `daily`; no spaces inside;
/// - intervals: `HH:MM-HH:MM`, separated by spaces or commas, from `00:00` to `24:00`;
///   the end must be after the start (no crossing midnight: write `fri 22:00-24:00` and
///   `sat 00:00-02:00`). Intervals that overlap or touch are merged; several lines may
///   name the same day.
///
/// Open means `start <= local time < end`: with `08:00-18:00`, 08:00:00.000 is open and
/// 18:00:00.000 is closed. Days not named are closed.
///
/// ```
/// use call_engine_orchestrator::rules::BusinessHours;
/// let h = BusinessHours::parse("mon-fri 08:00-18:00; sat 09:00-12:00")
///     .unwrap()
///     .with_utc_offset(60)
///     .unwrap()
///     .with_closed_date("2026-12-25")
///     .unwrap();
/// // 2026-11-21 is a Saturday: 10:30 local is 09:30 UTC.
/// assert!(h.is_open(1_795_253_400_000));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BusinessHours {
    /// Per weekday (Monday first), sorted, disjoint, non-touching `[start, end)` minutes.
    days: [Vec<(u16, u16)>; 7],
    offset_minutes: i32,
    /// Closed local days, counted from 1970-01-01.
    closed: BTreeSet<i64>,
}

impl BusinessHours {
    /// Always closed, UTC.
    pub fn new() -> Self {
        Self::default()
    }

    /// Open around the clock every day, UTC.
    pub fn always_open() -> Self {
        let mut h = Self::new();
        for d in Weekday::ALL {
            h.days[d.index()].push((0, DAY_MINUTES));
        }
        h
    }

    /// Parses a schedule (see the type's documentation), UTC, no closed dates.
    pub fn parse(schedule: &str) -> Result<Self, BusinessHoursError> {
        let mut h = Self::new();
        let lines = schedule
            .lines()
            .flat_map(|l| l.split('#').next().unwrap_or("").split(';'));
        for line in lines {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let mut tokens = line.split_whitespace();
            let days = parse_days(tokens.next().unwrap_or(""))?;
            let mut any = false;
            for text in tokens.flat_map(|t| t.split(',')).filter(|t| !t.is_empty()) {
                let (start, end) = parse_interval(text)?;
                for &d in &days {
                    h.add_minutes(d, start, end);
                }
                any = true;
            }
            if !any {
                return Err(BusinessHoursError::MissingIntervals { line: clip(line) });
            }
        }
        Ok(h)
    }

    /// With a fixed UTC offset in minutes (east positive: `60` for UTC+01:00).
    pub fn with_utc_offset(mut self, minutes: i32) -> Result<Self, BusinessHoursError> {
        if !(-MAX_UTC_OFFSET_MINUTES..=MAX_UTC_OFFSET_MINUTES).contains(&minutes) {
            return Err(BusinessHoursError::BadOffset { minutes });
        }
        self.offset_minutes = minutes;
        Ok(self)
    }

    /// With one more closed date, `YYYY-MM-DD` (local).
    pub fn with_closed_date(mut self, date: &str) -> Result<Self, BusinessHoursError> {
        self.add_closed_date(date)?;
        Ok(self)
    }

    /// Adds a closed date, `YYYY-MM-DD` (local).
    pub fn add_closed_date(&mut self, date: &str) -> Result<(), BusinessHoursError> {
        let day = parse_date(date.trim())
            .ok_or_else(|| BusinessHoursError::BadDate { text: clip(date) })?;
        self.closed.insert(day);
        Ok(())
    }

    /// Adds an open interval `start-end` (`"HH:MM-HH:MM"`) on a weekday.
    pub fn add_interval(&mut self, day: Weekday, interval: &str) -> Result<(), BusinessHoursError> {
        let (start, end) = parse_interval(interval.trim())?;
        self.add_minutes(day, start, end);
        Ok(())
    }

    fn add_minutes(&mut self, day: Weekday, start: u16, end: u16) {
        let v = &mut self.days[day.index()];
        v.push((start, end));
        v.sort_unstable();
        let mut merged: Vec<(u16, u16)> = Vec::with_capacity(v.len());
        for &(s, e) in v.iter() {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        *v = merged;
    }

    /// The UTC offset, in minutes.
    pub fn utc_offset_minutes(&self) -> i32 {
        self.offset_minutes
    }

    /// The open intervals of a weekday, as `[start, end)` minutes since local midnight
    /// (sorted, merged).
    pub fn intervals(&self, day: Weekday) -> &[(u16, u16)] {
        &self.days[day.index()]
    }

    /// Whether a local date is a closed date (`false` for an invalid date).
    pub fn is_closed_date(&self, year: i64, month: u8, day: u8) -> bool {
        valid_date(year, month, day) && self.closed.contains(&days_from_civil(year, month, day))
    }

    /// The closed dates, `(year, month, day)`, in order.
    pub fn closed_dates(&self) -> impl Iterator<Item = (i64, u8, u8)> + '_ {
        self.closed.iter().map(|&d| civil_from_days(d))
    }

    /// The local day (from 1970-01-01) and millisecond of the day of an instant.
    fn local(&self, unix_ms: u64) -> (i64, u32) {
        let local = i128::from(unix_ms) + i128::from(self.offset_minutes) * MINUTE_MS;
        // |local| < 2^65: the day fits an i64, the millisecond a u32.
        (
            local.div_euclid(DAY_MS) as i64,
            local.rem_euclid(DAY_MS) as u32,
        )
    }

    /// The local date and time of an instant (Unix milliseconds).
    pub fn local_time(&self, unix_ms: u64) -> LocalDateTime {
        let (days, ms) = self.local(unix_ms);
        let (year, month, day) = civil_from_days(days);
        LocalDateTime {
            year,
            month,
            day,
            weekday: Weekday::from_days(days),
            minute_of_day: (ms / 60_000) as u16,
            ms_of_day: ms,
        }
    }

    fn open_at(&self, day: i64, minute: u16) -> bool {
        !self.closed.contains(&day)
            && self.days[Weekday::from_days(day).index()]
                .iter()
                .any(|&(s, e)| s <= minute && minute < e)
    }

    /// Whether open at an instant (Unix milliseconds).
    pub fn is_open(&self, unix_ms: u64) -> bool {
        let (day, ms) = self.local(unix_ms);
        self.open_at(day, (ms / 60_000) as u16)
    }

    /// The first instant after `unix_ms` (Unix milliseconds, always `> unix_ms`) at
    /// which [`is_open`](Self::is_open) changes; `None` if it never does (never open,
    /// always open with no closed date ahead) or the instant is beyond `u64`.
    pub fn next_change(&self, unix_ms: u64) -> Option<u64> {
        let open_now = self.is_open(unix_ms);
        let (today, ms) = self.local(unix_ms);
        let offset = i128::from(self.offset_minutes) * MINUTE_MS;
        let to_unix = |day: i64, minute: u16| {
            u64::try_from(i128::from(day) * DAY_MS + i128::from(minute) * MINUTE_MS - offset).ok()
        };
        if self.days.iter().all(Vec::is_empty) {
            return None; // never open
        }
        if open_now && self.days.iter().all(|d| d == &[(0, DAY_MINUTES)]) {
            // Open around the clock: only closed dates change anything.
            let next = self.closed.range(today.saturating_add(1)..).next()?;
            return to_unix(*next, 0);
        }
        // Otherwise a change comes within a week when open (a weekday with a gap, or a
        // closed date), and within `7 × (closed dates + 2)` days when closed (each
        // closed date can hide at most one occurrence of an open weekday).
        let horizon = 7 * (self.closed.len() as i64).saturating_add(2);
        for day in today..=today.saturating_add(horizon) {
            let points = std::iter::once(0).chain(
                self.days[Weekday::from_days(day).index()]
                    .iter()
                    .flat_map(|&(s, e)| [s, e])
                    .filter(|&m| m < DAY_MINUTES),
            );
            for minute in points {
                if day == today && u32::from(minute) * 60_000 <= ms {
                    continue;
                }
                if self.open_at(day, minute) != open_now {
                    return to_unix(day, minute);
                }
            }
        }
        None
    }
}

impl FromStr for BusinessHours {
    type Err = BusinessHoursError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

fn parse_days(text: &str) -> Result<Vec<Weekday>, BusinessHoursError> {
    let unknown = || BusinessHoursError::UnknownDay { text: clip(text) };
    if text.eq_ignore_ascii_case("daily") {
        return Ok(Weekday::ALL.to_vec());
    }
    let mut days = Vec::new();
    for part in text.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let a = Weekday::parse(a).ok_or_else(unknown)?.index();
                let b = Weekday::parse(b).ok_or_else(unknown)?.index();
                let len = (b + 7 - a) % 7 + 1;
                days.extend((0..len).map(|i| Weekday::ALL[(a + i) % 7]));
            }
            None => days.push(Weekday::parse(part).ok_or_else(unknown)?),
        }
    }
    Ok(days)
}

/// `HH:MM` (00:00 to 24:00) as minutes since midnight.
fn parse_time(s: &str) -> Option<u16> {
    let (h, m) = s.split_once(':')?;
    let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if h.is_empty() || h.len() > 2 || m.len() != 2 || !digits(h) || !digits(m) {
        return None;
    }
    let (h, m) = (h.parse::<u16>().ok()?, m.parse::<u16>().ok()?);
    match (h, m) {
        (24, 0) => Some(DAY_MINUTES),
        (0..=23, 0..=59) => Some(h * 60 + m),
        _ => None,
    }
}

fn parse_interval(text: &str) -> Result<(u16, u16), BusinessHoursError> {
    let bad = || BusinessHoursError::BadInterval { text: clip(text) };
    let (a, b) = text.split_once('-').ok_or_else(bad)?;
    let (start, end) = (
        parse_time(a).ok_or_else(bad)?,
        parse_time(b).ok_or_else(bad)?,
    );
    if end <= start {
        return Err(BusinessHoursError::EmptyInterval { text: clip(text) });
    }
    Ok((start, end))
}

fn valid_date(year: i64, month: u8, day: u8) -> bool {
    day >= 1 && day <= days_in_month(year, month)
}

/// `YYYY-MM-DD` as a day from 1970-01-01.
fn parse_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse::<u16>().ok())?
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (m, d) = (u8::try_from(m).ok()?, u8::try_from(d).ok()?);
    valid_date(i64::from(y), m, d).then(|| days_from_civil(i64::from(y), m, d))
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
