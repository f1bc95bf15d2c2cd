use super::*;
use proptest::prelude::{any, prop_assert, prop_assert_eq, prop_assert_ne, proptest};

fn pat(s: &str) -> CallerPattern {
    CallerPattern::parse(s).unwrap()
}

// ----- caller patterns -----------------------------------------------------------------

#[test]
fn pattern_exact() {
    let p = pat("+4420123");
    assert!(p.matches("+4420123"));
    assert!(p.matches("+44 20-123"));
    assert!(p.matches("+44 (20) 123"));
    assert!(!p.matches("+44201234"));
    assert!(!p.matches("+442012"));
    assert!(!p.matches(""));
    assert!(!p.matches_all());
    assert_eq!(p.as_str(), "+4420123");
    assert_eq!(p.to_string(), "+4420123");
    // Separators in the pattern are ignored too.
    assert!(pat("+44 20-123").matches("+4420123"));
}

#[test]
fn pattern_prefix_and_single() {
    let p = pat("+4420*");
    assert!(p.matches("+4420"));
    assert!(p.matches("+44209999"));
    assert!(p.matches("+44 20 9999"));
    assert!(!p.matches("+4421"));
    assert!(!p.matches("+442"));
    let p = pat("+44??123");
    assert!(p.matches("+4420123"));
    assert!(p.matches("+4499123"));
    assert!(!p.matches("+449123"));
    assert!(!p.matches("+44991234"));
    let p = pat("0?*");
    assert!(p.matches("01"));
    assert!(p.matches("0123"));
    assert!(!p.matches("0"));
    // Letters, case-insensitive.
    let p = pat("anonymous");
    assert!(p.matches("Anonymous"));
    assert!(!p.matches("anon"));
}

#[test]
fn pattern_any() {
    for p in [pat("*"), pat(" * "), CallerPattern::any()] {
        assert!(p.matches_all());
        assert!(p.matches(""));
        assert!(p.matches("+33123"));
        assert!(p.matches("anything at all ✓"));
    }
}

#[test]
fn pattern_errors_name_the_pattern() {
    assert_eq!(
        CallerPattern::parse("  "),
        Err(CallerPatternError::Empty { pattern: "".into() })
    );
    assert_eq!(
        CallerPattern::parse("- -"),
        Err(CallerPatternError::Empty {
            pattern: "- -".into()
        })
    );
    assert_eq!(
        CallerPattern::parse("+44*1"),
        Err(CallerPatternError::MisplacedStar {
            pattern: "+44*1".into()
        })
    );
    assert_eq!(
        CallerPattern::parse("**"),
        Err(CallerPatternError::MisplacedStar {
            pattern: "**".into()
        })
    );
    let e = CallerPattern::parse("+44%1").unwrap_err();
    assert_eq!(
        e,
        CallerPatternError::InvalidChar {
            pattern: "+44%1".into(),
            ch: '%'
        }
    );
    assert!(e.to_string().contains("`+44%1`"), "{e}");
    let long = "1".repeat(MAX_PATTERN_LEN + 1);
    assert!(matches!(
        CallerPattern::parse(&long),
        Err(CallerPatternError::TooLong { .. })
    ));
    assert!(CallerPattern::parse(&"1".repeat(MAX_PATTERN_LEN)).is_ok());
    assert!("+1*".parse::<CallerPattern>().is_ok());
}

#[test]
fn pattern_serde() {
    let p = pat("+44 20*");
    let json = serde_json::to_string(&p).unwrap();
    assert_eq!(json, "\"+44 20*\"");
    assert_eq!(serde_json::from_str::<CallerPattern>(&json).unwrap(), p);
    assert!(serde_json::from_str::<CallerPattern>("\"1*2\"").is_err());
}

// ----- caller rules --------------------------------------------------------------------

#[test]
fn rules_evaluate() {
    let rules = CallerRules::new(vec![
        CallerRule::new(pat("+44*"))
            .with_priority(1)
            .with_skill("english", 3),
        CallerRule::new(pat("+4420*"))
            .with_priority(5)
            .with_skill("english", 2)
            .with_skill("london", 1),
        CallerRule::new(pat("+4420666")).blocking(),
        CallerRule::new(pat("*")).with_priority(-1),
        CallerRule::new(pat("+33*")).with_skill("french", 4),
        CallerRule::new(pat("+3399*")).blocking(),
        CallerRule::new(pat("+339*")).blocking(),
    ]);
    assert_eq!(rules.rules().len(), 7);
    let v = rules.evaluate("+44 20 1234");
    assert_eq!(
        v,
        CallerVerdict {
            blocked: false,
            blocked_by: None,
            priority: Some(5),
            skills: vec![("english".into(), 3), ("london".into(), 1)],
        }
    );
    let v = rules.evaluate("+44 161 1234");
    assert_eq!(v.priority, Some(1));
    assert_eq!(v.skills, vec![("english".into(), 3)]);
    let v = rules.evaluate("+4420666");
    assert!(v.blocked);
    assert_eq!(v.blocked_by, Some(2));
    assert_eq!(v.priority, None);
    assert!(v.skills.is_empty());
    // First matching block wins.
    assert_eq!(rules.evaluate("+339912").blocked_by, Some(5));
    assert_eq!(rules.evaluate("+33912").blocked_by, Some(6));
    let v = rules.evaluate("+331");
    assert_eq!(v.priority, Some(-1));
    assert_eq!(v.skills, vec![("french".into(), 4)]);
    // Empty rules: nothing.
    assert_eq!(
        CallerRules::default().evaluate("+1"),
        CallerVerdict::default()
    );
}

#[test]
fn rules_serde() {
    let mut rules = CallerRules::default();
    rules.push(CallerRule::new(pat("+1*")).with_priority(2));
    rules.push(CallerRule::new(pat("+1900*")).blocking());
    let json = serde_json::to_string(&rules).unwrap();
    assert_eq!(serde_json::from_str::<CallerRules>(&json).unwrap(), rules);
    let parsed: CallerRules =
        serde_json::from_str(r#"[{"pattern": "+44*", "skills": [["english", 3]]}]"#).unwrap();
    assert_eq!(parsed.evaluate("+441").skills, vec![("english".into(), 3)]);
}

proptest! {
    #[test]
    fn pattern_parse_never_panics(s in ".{0,80}", n in ".{0,40}") {
        if let Ok(p) = CallerPattern::parse(&s) {
            let _ = p.matches(&n);
            prop_assert_eq!(CallerPattern::parse(p.as_str()), Ok(p.clone()));
        }
    }

    #[test]
    fn exact_and_prefix_patterns_match(num in "\\+?[0-9]{1,15}", cut in 0usize..16) {
        prop_assert!(pat(&num).matches(&num));
        let cut = cut.min(num.len());
        let prefix = format!("{}*", &num[..cut]);
        if cut > 0 || num.is_empty() {
            prop_assert!(pat(&prefix).matches(&num));
        }
    }
}

// ----- X-Skills ------------------------------------------------------------------------

#[test]
fn skills_header_forms() {
    assert_eq!(
        parse_skills_header("english=5, billing=3").unwrap(),
        vec![("english".into(), 5), ("billing".into(), 3)]
    );
    assert_eq!(
        parse_skills_header("english:5;billing").unwrap(),
        vec![("english".into(), 5), ("billing".into(), 1)]
    );
    assert_eq!(
        parse_skills_header("  a_b-C = 0 ,, ; x : 100 ,").unwrap(),
        vec![("a_b-C".into(), 0), ("x".into(), 100)]
    );
    assert_eq!(parse_skills_header("").unwrap(), vec![]);
    assert_eq!(parse_skills_header(" , ; ").unwrap(), vec![]);
    // Duplicates keep the highest level.
    assert_eq!(
        parse_skills_header("a=2,b,a=7,a=1").unwrap(),
        vec![("a".into(), 7), ("b".into(), 1)]
    );
    assert_eq!(parse_skills_header("a=007").unwrap(), vec![("a".into(), 7)]);
}

#[test]
fn skills_header_errors() {
    use SkillsHeaderError::*;
    assert_eq!(
        parse_skills_header("=5"),
        Err(MissingName { item: "=5".into() })
    );
    assert_eq!(
        parse_skills_header("eng lish=5"),
        Err(InvalidName {
            name: "eng lish".into()
        })
    );
    assert_eq!(
        parse_skills_header("été=5"),
        Err(InvalidName {
            name: "été".into()
        })
    );
    for (input, level) in [
        ("a=101", "101"),
        ("a=255", "255"),
        ("a=-1", "-1"),
        ("a=", ""),
        ("a=1.5", "1.5"),
        ("a=1000", "1000"),
        ("a=x", "x"),
        ("a=5=6", "5=6"),
        ("a:5:6", "5:6"),
    ] {
        assert_eq!(
            parse_skills_header(input),
            Err(InvalidLevel {
                name: "a".into(),
                level: level.into()
            }),
            "{input}"
        );
    }
    let long = "x".repeat(MAX_SKILL_NAME_LEN + 1);
    assert!(matches!(
        parse_skills_header(&long),
        Err(NameTooLong { .. })
    ));
    assert!(parse_skills_header(&"x".repeat(MAX_SKILL_NAME_LEN)).is_ok());
    let many: Vec<String> = (0..=MAX_HEADER_SKILLS).map(|i| format!("s{i}")).collect();
    assert_eq!(
        parse_skills_header(&many.join(",")),
        Err(TooMany {
            max: MAX_HEADER_SKILLS
        })
    );
    assert_eq!(
        parse_skills_header(&many[..MAX_HEADER_SKILLS].join(","))
            .unwrap()
            .len(),
        MAX_HEADER_SKILLS
    );
    // Messages name the text; huge input is cut.
    let e = parse_skills_header("billing=high").unwrap_err().to_string();
    assert!(e.contains("`high`") && e.contains("`billing`"), "{e}");
    let e = parse_skills_header(&format!("a={}", "9".repeat(10_000))).unwrap_err();
    assert!(e.to_string().len() < 200);
}

proptest! {
    #[test]
    fn skills_header_never_panics(s in any::<String>()) {
        if let Ok(v) = parse_skills_header(&s) {
            prop_assert!(v.len() <= MAX_HEADER_SKILLS);
            for (n, l) in &v {
                prop_assert!(*l <= MAX_SKILL_LEVEL && !n.is_empty());
            }
        }
    }

    #[test]
    fn skills_header_roundtrip(v in proptest::collection::btree_map("[A-Za-z0-9_-]{1,10}", 0u8..=100, 0..32)) {
        let text: Vec<String> = v.iter().map(|(n, l)| format!("{n}={l}")).collect();
        let parsed = parse_skills_header(&text.join(", ")).unwrap();
        let want: Vec<(SmolStr, u8)> = v.iter().map(|(n, l)| (SmolStr::new(n), *l)).collect();
        prop_assert_eq!(parsed, want);
    }
}

// ----- calendar ------------------------------------------------------------------------

const MIN: u64 = 60_000;
const HOUR: u64 = 60 * MIN;

/// Unix ms of a local date and time at a UTC offset.
fn at(y: i64, mo: u8, d: u8, h: u64, mi: u64, offset_min: i64) -> u64 {
    let days = days_from_civil(y, mo, d);
    let local = days as i128 * 86_400_000 + (h * HOUR + mi * MIN) as i128;
    (local - offset_min as i128 * 60_000) as u64
}

#[test]
fn calendar_known_dates() {
    assert_eq!(days_from_civil(1970, 1, 1), 0);
    assert_eq!(civil_from_days(0), (1970, 1, 1));
    assert_eq!(Weekday::from_days(0), Weekday::Thu);
    assert_eq!(days_from_civil(1969, 12, 31), -1);
    assert_eq!(civil_from_days(-1), (1969, 12, 31));
    assert_eq!(Weekday::from_days(-1), Weekday::Wed);
    assert_eq!(days_from_civil(2000, 2, 29), 11_016);
    assert_eq!(days_from_civil(2026, 11, 21), 20_778);
    assert_eq!(Weekday::from_days(20_778), Weekday::Sat);
    assert_eq!(civil_from_days(20_778), (2026, 11, 21));
    assert_eq!(days_in_month(2000, 2), 29);
    assert_eq!(days_in_month(1900, 2), 28);
    assert_eq!(days_in_month(2024, 2), 29);
    assert_eq!(days_in_month(2026, 13), 0);
    let utc = BusinessHours::new();
    let t = utc.local_time(1_795_253_400_000); // 2026-11-21 09:30 UTC
    assert_eq!(
        t,
        LocalDateTime {
            year: 2026,
            month: 11,
            day: 21,
            weekday: Weekday::Sat,
            minute_of_day: 9 * 60 + 30,
            ms_of_day: (9 * 60 + 30) * 60_000,
        }
    );
    assert_eq!(utc.local_time(0).weekday, Weekday::Thu);
    let west = BusinessHours::new().with_utc_offset(-60).unwrap();
    let t = west.local_time(0);
    assert_eq!(
        (t.year, t.month, t.day, t.weekday),
        (1969, 12, 31, Weekday::Wed)
    );
    assert_eq!(t.minute_of_day, 23 * 60);
    // Extremes do not panic.
    let _ = utc.local_time(u64::MAX);
    let _ = civil_from_days(i64::MAX);
    let _ = civil_from_days(i64::MIN);
    let _ = days_from_civil(i64::MAX, 255, 255);
    let _ = days_from_civil(i64::MIN, 0, 0);
}

proptest! {
    #[test]
    fn civil_roundtrip(days in -100_000_000i64..100_000_000) {
        let (y, m, d) = civil_from_days(days);
        prop_assert!((1..=12).contains(&m) && d >= 1 && d <= days_in_month(y, m));
        prop_assert_eq!(days_from_civil(y, m, d), days);
        prop_assert_eq!(Weekday::from_days(days + 1).index(), (Weekday::from_days(days).index() + 1) % 7);
    }
}

#[test]
fn weekday_names() {
    assert_eq!(Weekday::parse("MONDAY"), Some(Weekday::Mon));
    assert_eq!(Weekday::parse("sun"), Some(Weekday::Sun));
    assert_eq!(Weekday::parse("x"), None);
    assert_eq!(Weekday::Fri.to_string(), "fri");
}

// ----- business hours ------------------------------------------------------------------

fn office() -> BusinessHours {
    BusinessHours::parse("mon-fri 08:00-18:00\nsat 09:00-12:00")
        .unwrap()
        .with_utc_offset(60)
        .unwrap()
}

#[test]
fn parse_schedule() {
    let h = BusinessHours::parse(
        "mon-fri 08:00-12:00 13:00-18:00 # lunch\n\n  sat,sun 10:00-11:00,11:00-12:00; fri-mon 20:00-24:00; WED 07:30-08:30",
    )
    .unwrap();
    assert_eq!(
        h.intervals(Weekday::Mon),
        &[(480, 720), (780, 1080), (1200, 1440)]
    );
    assert_eq!(h.intervals(Weekday::Tue), &[(480, 720), (780, 1080)]);
    assert_eq!(h.intervals(Weekday::Wed), &[(450, 720), (780, 1080)]);
    assert_eq!(h.intervals(Weekday::Sat), &[(600, 720), (1200, 1440)]);
    assert_eq!(h.intervals(Weekday::Thu), &[(480, 720), (780, 1080)]);
    assert_eq!(h.utc_offset_minutes(), 0);
    // A comment may contain `;`.
    let c = BusinessHours::parse("sat 09:00-12:00 # half day; usually\r\nsun 10:00-11:00").unwrap();
    assert_eq!(c.intervals(Weekday::Sat), &[(540, 720)]);
    assert_eq!(c.intervals(Weekday::Sun), &[(600, 660)]);
    let d = BusinessHours::parse("daily 00:00-24:00").unwrap();
    assert_eq!(d, BusinessHours::always_open());
    assert_eq!("".parse::<BusinessHours>().unwrap(), BusinessHours::new());
    assert_eq!(
        "monday 9:00-17:00"
            .parse::<BusinessHours>()
            .unwrap()
            .intervals(Weekday::Mon),
        &[(540, 1020)]
    );
}

#[test]
fn parse_schedule_errors() {
    use BusinessHoursError::*;
    let cases: Vec<(&str, BusinessHoursError)> = vec![
        (
            "mon-fri",
            MissingIntervals {
                line: "mon-fri".into(),
            },
        ),
        (
            "mon-fry 08:00-18:00",
            UnknownDay {
                text: "mon-fry".into(),
            },
        ),
        (
            "08:00-18:00",
            UnknownDay {
                text: "08:00-18:00".into(),
            },
        ),
        (
            "mon 8-18",
            BadInterval {
                text: "8-18".into(),
            },
        ),
        (
            "mon 08:00-18:60",
            BadInterval {
                text: "08:00-18:60".into(),
            },
        ),
        (
            "mon 08:00-24:01",
            BadInterval {
                text: "08:00-24:01".into(),
            },
        ),
        (
            "mon 25:00-26:00",
            BadInterval {
                text: "25:00-26:00".into(),
            },
        ),
        (
            "mon 08:0-18:00",
            BadInterval {
                text: "08:0-18:00".into(),
            },
        ),
        (
            "mon +8:00-18:00",
            BadInterval {
                text: "+8:00-18:00".into(),
            },
        ),
        (
            "mon 22:00-02:00",
            EmptyInterval {
                text: "22:00-02:00".into(),
            },
        ),
        (
            "mon 08:00-08:00",
            EmptyInterval {
                text: "08:00-08:00".into(),
            },
        ),
        (
            "mon 24:00-24:00",
            EmptyInterval {
                text: "24:00-24:00".into(),
            },
        ),
    ];
    for (text, want) in cases {
        let got = BusinessHours::parse(text);
        assert_eq!(got, Err(want), "{text}");
        // The message names the offending text.
        let msg = got.unwrap_err().to_string();
        assert!(msg.contains('`'), "{msg}");
    }
    assert_eq!(
        BusinessHours::new().with_utc_offset(18 * 60 + 1),
        Err(BadOffset { minutes: 1081 })
    );
    assert!(BusinessHours::new().with_utc_offset(-18 * 60).is_ok());
    for bad in [
        "2026-02-29",
        "2026-13-01",
        "2026-00-10",
        "2026-1-01",
        "26-01-01",
        "2026/01/01",
        "",
        "2026-01-32",
        "２０２６-01-01",
    ] {
        assert_eq!(
            BusinessHours::new().with_closed_date(bad),
            Err(BadDate { text: bad.into() }),
            "{bad}"
        );
    }
    assert!(BusinessHours::new().with_closed_date("2024-02-29").is_ok());
    let mut h = BusinessHours::new();
    assert!(h.add_interval(Weekday::Mon, "09:00-10:00").is_ok());
    assert!(h.add_interval(Weekday::Mon, "10:00-09:00").is_err());
    assert_eq!(h.intervals(Weekday::Mon), &[(540, 600)]);
}

#[test]
fn boundaries_and_offset() {
    let h = office();
    // Monday 2026-11-23, UTC+1.
    assert!(!h.is_open(at(2026, 11, 23, 7, 59, 60) + 59_999));
    assert!(h.is_open(at(2026, 11, 23, 8, 0, 60)));
    assert!(h.is_open(at(2026, 11, 23, 17, 59, 60) + 59_999));
    assert!(!h.is_open(at(2026, 11, 23, 18, 0, 60)));
    assert_eq!(at(2026, 11, 23, 8, 0, 60), 1_795_417_200_000);
    // Saturday morning only; Sunday closed.
    assert!(h.is_open(at(2026, 11, 21, 10, 30, 60)));
    assert!(!h.is_open(at(2026, 11, 21, 12, 0, 60)));
    assert!(!h.is_open(at(2026, 11, 22, 10, 0, 60)));
    // 07:30 UTC on Monday is 08:30 local: open, although 07:30 is before 08:00.
    assert!(h.is_open(at(2026, 11, 23, 7, 30, 0)));
}

#[test]
fn offset_crossing_midnight() {
    // Open Monday 00:00-02:00 local at UTC+3: that is Sunday 21:00-23:00 UTC.
    let h = BusinessHours::parse("mon 00:00-02:00")
        .unwrap()
        .with_utc_offset(180)
        .unwrap();
    assert!(h.is_open(at(2026, 11, 22, 21, 0, 0))); // Sunday UTC
    assert!(!h.is_open(at(2026, 11, 22, 23, 0, 0)));
    assert!(!h.is_open(at(2026, 11, 23, 0, 30, 0))); // Monday UTC, Monday 03:30 local
                                                     // Open Friday 22:00-24:00 local at UTC-5: Saturday 03:00-05:00 UTC.
    let h = BusinessHours::parse("fri 22:00-24:00")
        .unwrap()
        .with_utc_offset(-300)
        .unwrap();
    assert!(h.is_open(at(2026, 11, 21, 3, 0, 0)));
    assert!(h.is_open(at(2026, 11, 21, 4, 59, 0)));
    assert!(!h.is_open(at(2026, 11, 21, 5, 0, 0)));
    assert_eq!(
        h.next_change(at(2026, 11, 21, 3, 0, 0)),
        Some(at(2026, 11, 21, 5, 0, 0))
    );
    // Before 1970 in local time.
    let h = BusinessHours::parse("wed 23:00-24:00")
        .unwrap()
        .with_utc_offset(-60)
        .unwrap();
    assert!(h.is_open(0)); // 1969-12-31 23:00 local, a Wednesday
    assert_eq!(h.next_change(0), Some(HOUR));
}

#[test]
fn holidays() {
    let h = office().with_closed_date("2026-12-25").unwrap();
    assert!(h.is_closed_date(2026, 12, 25));
    assert!(!h.is_closed_date(2026, 12, 24));
    assert!(!h.is_closed_date(2026, 2, 30));
    assert_eq!(h.closed_dates().collect::<Vec<_>>(), vec![(2026, 12, 25)]);
    assert!(h.is_open(at(2026, 12, 24, 12, 0, 60)));
    assert!(!h.is_open(at(2026, 12, 25, 12, 0, 60)));
    // The holiday is local: 23:30 UTC on the 24th is 00:30 local on the 25th.
    let round = BusinessHours::always_open()
        .with_utc_offset(60)
        .unwrap()
        .with_closed_date("2026-12-25")
        .unwrap();
    assert!(round.is_open(at(2026, 12, 24, 22, 59, 0)));
    assert!(!round.is_open(at(2026, 12, 24, 23, 30, 0)));
    assert!(round.is_open(at(2026, 12, 25, 23, 0, 0)));
    // Always open: the only changes are around the holiday.
    assert_eq!(round.next_change(0), Some(at(2026, 12, 25, 0, 0, 60)));
    assert_eq!(
        round.next_change(at(2026, 12, 25, 0, 0, 60)),
        Some(at(2026, 12, 26, 0, 0, 60))
    );
    assert_eq!(round.next_change(at(2026, 12, 26, 0, 0, 60)), None);
}

#[test]
fn next_change_examples() {
    let h = office().with_closed_date("2026-12-25").unwrap();
    // Thursday 24 Dec 12:00 → closes 18:00; then Friday is a holiday, Saturday opens 09:00.
    let t = at(2026, 12, 24, 12, 0, 60);
    let close = h.next_change(t).unwrap();
    assert_eq!(close, at(2026, 12, 24, 18, 0, 60));
    assert_eq!(close, 1_798_131_600_000);
    let open = h.next_change(close).unwrap();
    assert_eq!(open, at(2026, 12, 26, 9, 0, 60));
    assert_eq!(h.next_change(open), Some(at(2026, 12, 26, 12, 0, 60)));
    assert_eq!(
        h.next_change(at(2026, 12, 26, 12, 0, 60)),
        Some(at(2026, 12, 28, 8, 0, 60))
    );
    // Exactly at a boundary: the next one, strictly later.
    assert_eq!(
        h.next_change(at(2026, 12, 28, 8, 0, 60)),
        Some(at(2026, 12, 28, 18, 0, 60))
    );
    // One millisecond before opening: opens in 1 ms.
    let t = at(2026, 12, 28, 8, 0, 60) - 1;
    assert_eq!(h.next_change(t), Some(t + 1));
    // Never open / always open: no change.
    assert_eq!(BusinessHours::new().next_change(0), None);
    assert_eq!(BusinessHours::always_open().next_change(0), None);
    // Beyond u64.
    assert_eq!(office().next_change(u64::MAX), None);
    assert_eq!(office().next_change(u64::MAX - 1), None);
    // Many holidays in a row: still found.
    let mut h = BusinessHours::parse("mon 09:00-10:00").unwrap();
    for day in 0..60 {
        let (y, m, d) = civil_from_days(days_from_civil(2027, 1, 1) + day);
        h.add_closed_date(&format!("{y:04}-{m:02}-{d:02}")).unwrap();
    }
    assert_eq!(
        h.next_change(at(2026, 12, 31, 12, 0, 0)),
        Some(at(2027, 3, 8, 9, 0, 0)) // the first Monday after 1 March 2027
    );
}

fn arb_hours() -> impl proptest::strategy::Strategy<Value = BusinessHours> {
    use proptest::strategy::Strategy as _;
    let day = proptest::collection::vec((0u16..1440, 1u16..600), 0..3);
    (
        proptest::collection::vec(day, 7),
        -1080i32..=1080,
        proptest::collection::vec(0i64..60, 0..6),
    )
        .prop_map(|(days, offset, holidays)| {
            let mut h = BusinessHours::new().with_utc_offset(offset).unwrap();
            for (i, ivs) in days.into_iter().enumerate() {
                for (s, len) in ivs {
                    let e = (s + len).min(1440);
                    let text = format!("{:02}:{:02}-{:02}:{:02}", s / 60, s % 60, e / 60, e % 60);
                    h.add_interval(Weekday::ALL[i], &text).unwrap();
                }
            }
            for d in holidays {
                let (y, m, dd) = civil_from_days(days_from_civil(2026, 1, 1) + d);
                h.add_closed_date(&format!("{y:04}-{m:02}-{dd:02}"))
                    .unwrap();
            }
            h
        })
}

proptest! {
    #[test]
    fn is_open_constant_between_changes(h in arb_hours(), start in 1_767_000_000_000u64..1_772_000_000_000, samples in proptest::collection::vec(0.0f64..1.0, 8)) {
        let mut t = start;
        for _ in 0..6 {
            let open = h.is_open(t);
            match h.next_change(t) {
                Some(c) => {
                    prop_assert!(c > t);
                    prop_assert_ne!(h.is_open(c), open);
                    prop_assert_eq!(h.is_open(c - 1), open);
                    for f in &samples {
                        let s = t + ((c - t) as f64 * f) as u64;
                        prop_assert_eq!(h.is_open(s.min(c - 1)), open);
                    }
                    // Changes fall on whole local minutes.
                    prop_assert_eq!(h.local_time(c).ms_of_day % 60_000, 0);
                    t = c;
                }
                None => {
                    for f in &samples {
                        let s = t + (f * 30.0 * 86_400_000.0) as u64;
                        prop_assert_eq!(h.is_open(s), open);
                    }
                    break;
                }
            }
        }
    }

    #[test]
    fn business_hours_parse_never_panics(s in ".{0,60}", d in ".{0,12}", t in any::<u64>()) {
        if let Ok(h) = BusinessHours::parse(&s) {
            let _ = h.is_open(t);
            let _ = h.next_change(t);
        }
        let _ = BusinessHours::new().with_closed_date(&d);
    }
}
