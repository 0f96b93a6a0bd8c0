use super::*;
use proptest::prelude::*;

fn ts(text: &str) -> Timestamp {
    text.parse().expect("test timestamp")
}

/// A named zone from the system database, or its POSIX rule (exact for
/// the years used here) where the machine has no zoneinfo.
fn zone(name: &str, posix: &str) -> TimeZone {
    TimeZone::get(name).unwrap_or_else(|_| TimeZone::posix(posix).expect("posix rule"))
}

fn berlin() -> TimeZone {
    zone("Europe/Berlin", "CET-1CEST,M3.5.0,M10.5.0/3")
}

fn new_york() -> TimeZone {
    zone("America/New_York", "EST5EDT,M3.2.0,M11.1.0")
}

fn snap(id: &str, time: &str) -> SnapshotInfo {
    tagged(id, time, &[])
}

fn tagged(id: &str, time: &str, tags: &[&str]) -> SnapshotInfo {
    SnapshotInfo {
        id: id.to_string(),
        time: ts(time),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        source: "/data".to_string(),
        host: "node1".to_string(),
    }
}

fn run(snapshots: &[SnapshotInfo], policy: &KeepPolicy, tz: &TimeZone) -> Vec<Decision> {
    decide(snapshots, policy, GroupBy::default(), tz).expect("valid policy")
}

/// (id, reasons) of every decision, in output order; removed ones have
/// an empty reason list.
fn verdicts(decisions: &[Decision]) -> Vec<(String, Vec<String>)> {
    decisions
        .iter()
        .map(|d| (d.id.clone(), d.reasons.clone()))
        .collect()
}

fn expect(rows: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
    rows.iter()
        .map(|(id, reasons)| {
            (
                id.to_string(),
                reasons.iter().map(|r| r.to_string()).collect(),
            )
        })
        .collect()
}

fn kept_ids(decisions: &[Decision]) -> Vec<&str> {
    decisions
        .iter()
        .filter(|d| d.keep)
        .map(|d| d.id.as_str())
        .collect()
}

#[test]
fn several_rules_together_keep_the_union_with_every_reason() {
    let snapshots = vec![
        snap("k", "2024-06-01T00:00:00Z"),
        snap("a", "2026-05-10T18:00:00Z"), // Sunday, ISO week 19
        snap("i", "2026-05-09T08:00:00Z"),
        snap("b", "2026-05-10T09:00:00Z"),
        snap("c", "2026-05-09T20:00:00Z"),
        snap("d", "2026-05-08T07:00:00Z"),
        snap("e", "2026-05-01T12:00:00Z"), // Friday, ISO week 18
        snap("j", "2026-04-25T12:00:00Z"),
        snap("f", "2026-04-20T12:00:00Z"),
        snap("g", "2026-03-15T12:00:00Z"),
        snap("h", "2025-12-31T23:00:00Z"),
    ];
    let policy = KeepPolicy {
        last: Some(2),
        daily: Some(3),
        weekly: Some(2),
        monthly: Some(3),
        yearly: Some(2),
        ..KeepPolicy::default()
    };
    let decisions = run(&snapshots, &policy, &TimeZone::UTC);
    let all_five: &[&str] = &["last", "daily", "weekly", "monthly", "yearly"];
    assert_eq!(
        verdicts(&decisions),
        expect(&[
            ("a", all_five),
            ("b", &["last"]),
            ("c", &["daily"]),
            ("i", &[]),
            ("d", &["daily"]),
            ("e", &["weekly"]),
            ("j", &["monthly"]),
            ("f", &[]),
            ("g", &["monthly"]),
            ("h", &["yearly"]),
            ("k", &[]),
        ])
    );
}

#[test]
fn duplicates_in_one_hour_keep_only_the_newest() {
    let snapshots = vec![
        snap("10:05", "2026-02-02T10:05:00Z"),
        snap("10:55", "2026-02-02T10:55:00Z"),
        snap("10:20", "2026-02-02T10:20:00Z"),
        snap("11:01", "2026-02-02T11:01:00Z"),
        snap("09:59", "2026-02-02T09:59:00Z"),
    ];
    let policy = KeepPolicy {
        hourly: Some(3),
        ..KeepPolicy::default()
    };
    let decisions = run(&snapshots, &policy, &TimeZone::UTC);
    assert_eq!(kept_ids(&decisions), ["11:01", "10:55", "09:59"]);
}

#[test]
fn hourly_across_spring_forward_in_berlin_has_no_two_oclock_bucket() {
    // 2026-03-29: 02:00 CET jumps to 03:00 CEST (01:00Z).
    let times = [
        "2026-03-28T23:00:00Z", // 00:00 CET
        "2026-03-28T23:30:00Z", // 00:30 CET
        "2026-03-29T00:00:00Z", // 01:00 CET
        "2026-03-29T00:30:00Z", // 01:30 CET
        "2026-03-29T01:00:00Z", // 03:00 CEST
        "2026-03-29T01:30:00Z", // 03:30 CEST
        "2026-03-29T02:00:00Z", // 04:00 CEST
        "2026-03-29T02:30:00Z", // 04:30 CEST
        "2026-03-29T03:00:00Z", // 05:00 CEST
    ];
    let snapshots: Vec<_> = times.iter().map(|t| snap(t, t)).collect();
    let policy = KeepPolicy {
        hourly: Some(24),
        ..KeepPolicy::default()
    };
    let tz = berlin();
    let decisions = run(&snapshots, &policy, &tz);
    assert_eq!(
        kept_ids(&decisions),
        [
            "2026-03-29T03:00:00Z",
            "2026-03-29T02:30:00Z",
            "2026-03-29T01:30:00Z",
            "2026-03-29T00:30:00Z",
            "2026-03-28T23:30:00Z",
        ]
    );
    let hours: Vec<i8> = kept_ids(&decisions)
        .iter()
        .map(|id| tz.to_datetime(ts(id)).hour())
        .collect();
    assert_eq!(hours, [5, 4, 3, 1, 0]);
}

#[test]
fn hourly_in_berlin_autumn_repeated_hour_is_two_buckets() {
    // 2026-10-25: 03:00 CEST falls back to 02:00 CET (01:00Z).
    let snapshots = vec![
        snap("01:50 CEST", "2026-10-24T23:50:00Z"),
        snap("02:10 CEST", "2026-10-25T00:10:00Z"),
        snap("02:30 CEST", "2026-10-25T00:30:00Z"),
        snap("02:10 CET", "2026-10-25T01:10:00Z"),
        snap("02:30 CET", "2026-10-25T01:30:00Z"),
    ];
    let policy = KeepPolicy {
        hourly: Some(10),
        ..KeepPolicy::default()
    };
    let decisions = run(&snapshots, &policy, &berlin());
    assert_eq!(
        kept_ids(&decisions),
        ["02:30 CET", "02:30 CEST", "01:50 CEST"]
    );
}

#[test]
fn hourly_and_daily_in_new_york_fall_back() {
    // 2026-11-01: 02:00 EDT falls back to 01:00 EST (06:00Z).
    let snapshots = vec![
        snap("01:30 EDT", "2026-11-01T05:30:00Z"),
        snap("01:30 EST", "2026-11-01T06:30:00Z"),
        snap("01:45 EST", "2026-11-01T06:45:00Z"),
    ];
    let policy = KeepPolicy {
        hourly: Some(5),
        daily: Some(5),
        ..KeepPolicy::default()
    };
    let decisions = run(&snapshots, &policy, &new_york());
    assert_eq!(
        verdicts(&decisions),
        expect(&[
            ("01:45 EST", &["hourly", "daily"]),
            ("01:30 EST", &[]),
            ("01:30 EDT", &["hourly"]),
        ])
    );
}

#[test]
fn daily_spring_forward_day_is_one_bucket_in_berlin_not_in_utc() {
    let snapshots = vec![
        snap("03-28 23:45 CET", "2026-03-28T22:45:00Z"),
        snap("03-29 00:15 CET", "2026-03-28T23:15:00Z"),
        snap("03-29 23:45 CEST", "2026-03-29T21:45:00Z"),
    ];
    let policy = KeepPolicy {
        daily: Some(10),
        ..KeepPolicy::default()
    };
    let in_berlin = run(&snapshots, &policy, &berlin());
    assert_eq!(
        kept_ids(&in_berlin),
        ["03-29 23:45 CEST", "03-28 23:45 CET"]
    );
    let in_utc = run(&snapshots, &policy, &TimeZone::UTC);
    assert_eq!(kept_ids(&in_utc), ["03-29 23:45 CEST", "03-29 00:15 CET"]);
}

#[test]
fn daily_fall_back_day_is_one_bucket_in_berlin_not_in_utc() {
    // The 25-hour day 2026-10-25 runs from 22:00Z on the 24th to 23:00Z.
    let snapshots = vec![
        snap("10-25 00:15 CEST", "2026-10-24T22:15:00Z"),
        snap("10-25 23:45 CET", "2026-10-25T22:45:00Z"),
        snap("10-26 00:15 CET", "2026-10-25T23:15:00Z"),
    ];
    let policy = KeepPolicy {
        daily: Some(10),
        ..KeepPolicy::default()
    };
    let in_berlin = run(&snapshots, &policy, &berlin());
    assert_eq!(kept_ids(&in_berlin), ["10-26 00:15 CET", "10-25 23:45 CET"]);
    let in_utc = run(&snapshots, &policy, &TimeZone::UTC);
    assert_eq!(kept_ids(&in_utc), ["10-26 00:15 CET", "10-25 00:15 CEST"]);
}

#[test]
fn weekly_uses_iso_week_53_across_new_year_while_yearly_uses_calendar_year() {
    let snapshots = vec![
        snap("2026-12-27 Sun W52", "2026-12-27T12:00:00Z"),
        snap("2026-12-28 Mon W53", "2026-12-28T12:00:00Z"),
        snap("2026-12-31 Thu W53", "2026-12-31T12:00:00Z"),
        snap("2027-01-01 Fri W53", "2027-01-01T12:00:00Z"),
        snap("2027-01-03 Sun W53", "2027-01-03T12:00:00Z"),
        snap("2027-01-04 Mon W01", "2027-01-04T12:00:00Z"),
    ];
    let policy = KeepPolicy {
        weekly: Some(10),
        yearly: Some(10),
        ..KeepPolicy::default()
    };
    let decisions = run(&snapshots, &policy, &TimeZone::UTC);
    assert_eq!(
        verdicts(&decisions),
        expect(&[
            ("2027-01-04 Mon W01", &["weekly", "yearly"]),
            ("2027-01-03 Sun W53", &["weekly"]),
            ("2027-01-01 Fri W53", &[]),
            ("2026-12-31 Thu W53", &["yearly"]),
            ("2026-12-28 Mon W53", &[]),
            ("2026-12-27 Sun W52", &["weekly"]),
        ])
    );
}

#[test]
fn weekly_puts_late_december_into_next_iso_year() {
    // 2024-12-30 is a Monday of 2025-W01.
    let snapshots = vec![
        snap("2024-12-29 W52", "2024-12-29T12:00:00Z"),
        snap("2024-12-30 2025-W01", "2024-12-30T12:00:00Z"),
        snap("2025-01-05 2025-W01", "2025-01-05T12:00:00Z"),
    ];
    let policy = KeepPolicy {
        weekly: Some(10),
        ..KeepPolicy::default()
    };
    let decisions = run(&snapshots, &policy, &TimeZone::UTC);
    assert_eq!(
        kept_ids(&decisions),
        ["2025-01-05 2025-W01", "2024-12-29 W52"]
    );
}

#[test]
fn empty_input_gives_no_decisions() {
    for group_by in [
        GroupBy::default(),
        GroupBy::NONE,
        "host,tags".parse().unwrap(),
    ] {
        let decisions = decide(&[], &default_policy(), group_by, &TimeZone::UTC).unwrap();
        assert!(decisions.is_empty(), "{group_by}: {decisions:?}");
    }
}

#[test]
fn rules_with_nothing_left_to_keep_remove_the_rest() {
    // monthly asks for more buckets than exist; last 1 leaves the rest to it.
    let snapshots = vec![
        snap("jan", "2026-01-10T00:00:00Z"),
        snap("jan-old", "2026-01-05T00:00:00Z"),
        snap("feb", "2026-02-10T00:00:00Z"),
    ];
    let policy = KeepPolicy {
        last: Some(1),
        monthly: Some(12),
        ..KeepPolicy::default()
    };
    let decisions = run(&snapshots, &policy, &TimeZone::UTC);
    assert_eq!(
        verdicts(&decisions),
        expect(&[
            ("feb", &["last", "monthly"]),
            ("jan", &["monthly"]),
            ("jan-old", &[]),
        ])
    );
}

#[test]
fn no_grouping_puts_everything_into_one_group() {
    let mut other = snap("other", "2026-01-02T00:00:00Z");
    other.source = "/elsewhere".to_string();
    other.host = "node2".to_string();
    let snapshots = vec![snap("mine", "2026-01-01T00:00:00Z"), other];
    let policy = KeepPolicy {
        last: Some(1),
        ..KeepPolicy::default()
    };
    let decisions = decide(&snapshots, &policy, GroupBy::NONE, &TimeZone::UTC).unwrap();
    assert_eq!(kept_ids(&decisions), ["other"]);
    assert!(decisions.iter().all(|d| d.group == GroupKey::default()));
    assert_eq!(decisions[0].group.to_string(), "all snapshots");
}

#[test]
fn keep_within_is_measured_from_the_newest_snapshot_not_from_now() {
    let snapshots = vec![
        snap("newest", "2020-06-10T12:00:00Z"),
        snap("1.5d", "2020-06-09T00:00:00Z"),
        snap("exactly 2d", "2020-06-08T12:00:00Z"),
        snap("2d + 1s", "2020-06-08T11:59:59Z"),
    ];
    let policy = KeepPolicy {
        within: Some("2d".parse().unwrap()),
        ..KeepPolicy::default()
    };
    let decisions = run(&snapshots, &policy, &TimeZone::UTC);
    assert_eq!(
        verdicts(&decisions),
        expect(&[
            ("newest", &["within"]),
            ("1.5d", &["within"]),
            ("exactly 2d", &["within"]),
            ("2d + 1s", &[]),
        ])
    );
}

#[test]
fn keep_within_months_clamp_to_the_end_of_a_shorter_month() {
    let snapshots = vec![
        snap("newest", "2026-03-31T10:00:00Z"),
        snap("03-03", "2026-03-03T10:00:00Z"),
        snap("02-28 10:00", "2026-02-28T10:00:00Z"),
        snap("02-28 09:59", "2026-02-28T09:59:00Z"),
    ];
    let policy = KeepPolicy {
        within: Some("1m".parse().unwrap()),
        ..KeepPolicy::default()
    };
    let decisions = run(&snapshots, &policy, &TimeZone::UTC);
    assert_eq!(kept_ids(&decisions), ["newest", "03-03", "02-28 10:00"]);
}

#[test]
fn keep_within_days_follow_the_wall_clock_across_dst_but_hours_do_not() {
    // Newest is 2026-03-29 12:00 CEST; one calendar day back is
    // 2026-03-28 12:00 CET, only 23 hours earlier.
    let snapshots = vec![
        snap("newest", "2026-03-29T10:00:00Z"),
        snap("23h", "2026-03-28T11:00:00Z"),
        snap("23.5h", "2026-03-28T10:30:00Z"),
    ];
    let within = |text: &str| KeepPolicy {
        within: Some(text.parse().unwrap()),
        ..KeepPolicy::default()
    };
    let day_in_berlin = run(&snapshots, &within("1d"), &berlin());
    assert_eq!(kept_ids(&day_in_berlin), ["newest", "23h"]);
    let day_in_utc = run(&snapshots, &within("1d"), &TimeZone::UTC);
    assert_eq!(kept_ids(&day_in_utc), ["newest", "23h", "23.5h"]);
    let hours_in_berlin = run(&snapshots, &within("24h"), &berlin());
    assert_eq!(kept_ids(&hours_in_berlin), ["newest", "23h", "23.5h"]);
}

#[test]
fn tag_rules_keep_any_matching_tag_and_name_each_one() {
    let snapshots = vec![
        tagged("prod", "2026-01-01T00:00:00Z", &["prod"]),
        tagged("both", "2026-01-02T00:00:00Z", &["keep", "prod"]),
        tagged("dev", "2026-01-03T00:00:00Z", &["dev"]),
        tagged("none", "2026-01-04T00:00:00Z", &[]),
        tagged("prefix", "2026-01-05T00:00:00Z", &["production"]),
    ];
    let policy = KeepPolicy {
        tags: vec!["prod".into(), "keep".into(), "prod".into()],
        ..KeepPolicy::default()
    };
    let decisions = run(&snapshots, &policy, &TimeZone::UTC);
    assert_eq!(
        verdicts(&decisions),
        expect(&[
            ("prefix", &[]),
            ("none", &[]),
            ("dev", &[]),
            ("both", &["tag:prod", "tag:keep"]),
            ("prod", &["tag:prod"]),
        ])
    );
}

#[test]
fn grouping_by_source_keeps_each_sources_own_newest() {
    let at = |id: &str, time: &str, source: &str| SnapshotInfo {
        source: source.to_string(),
        ..snap(id, time)
    };
    let snapshots = vec![
        at("a-new", "2026-05-02T00:00:00Z", "/a"),
        at("b-new", "2026-01-02T00:00:00Z", "/b"),
        at("a-old", "2026-05-01T00:00:00Z", "/a"),
        at("b-old", "2026-01-01T00:00:00Z", "/b"),
    ];
    let policy = KeepPolicy {
        last: Some(1),
        ..KeepPolicy::default()
    };
    let decisions = run(&snapshots, &policy, &TimeZone::UTC);
    assert_eq!(kept_ids(&decisions), ["a-new", "b-new"]);
    let groups: Vec<String> = decisions.iter().map(|d| d.group.to_string()).collect();
    assert_eq!(groups, ["source /a", "source /a", "source /b", "source /b"]);
    assert!(decisions.iter().all(|d| d.group.host.is_none()));
}

#[test]
fn grouping_by_host_and_tags_uses_the_sorted_tag_set() {
    let on = |id: &str, time: &str, host: &str, tags: &[&str]| SnapshotInfo {
        host: host.to_string(),
        ..tagged(id, time, tags)
    };
    let snapshots = vec![
        on("ab-1", "2026-01-01T00:00:00Z", "h1", &["b", "a"]),
        on("ab-2", "2026-01-02T00:00:00Z", "h1", &["a", "b", "a"]),
        on("a-1", "2026-01-03T00:00:00Z", "h1", &["a"]),
        on("ab-h2", "2026-01-04T00:00:00Z", "h2", &["a", "b"]),
    ];
    let policy = KeepPolicy {
        last: Some(1),
        ..KeepPolicy::default()
    };
    let group_by: GroupBy = "host,tags".parse().unwrap();
    let decisions = decide(&snapshots, &policy, group_by, &TimeZone::UTC).unwrap();
    assert_eq!(kept_ids(&decisions), ["a-1", "ab-2", "ab-h2"]);
    let ab_h1 = GroupKey {
        source: None,
        host: Some("h1".into()),
        tags: Some(vec!["a".into(), "b".into()]),
    };
    let in_ab_h1: Vec<&str> = decisions
        .iter()
        .filter(|d| d.group == ab_h1)
        .map(|d| d.id.as_str())
        .collect();
    assert_eq!(in_ab_h1, ["ab-2", "ab-1"]);
}

#[test]
fn identical_times_are_ordered_by_id() {
    let snapshots = vec![
        snap("b", "2026-01-01T00:00:00Z"),
        snap("c", "2026-01-01T00:00:00Z"),
        snap("a", "2026-01-01T00:00:00Z"),
    ];
    let policy = KeepPolicy {
        last: Some(1),
        hourly: Some(1),
        ..KeepPolicy::default()
    };
    let decisions = run(&snapshots, &policy, &TimeZone::UTC);
    assert_eq!(
        verdicts(&decisions),
        expect(&[("a", &["last", "hourly"]), ("b", &[]), ("c", &[])])
    );
}

#[test]
fn duplicate_snapshot_ids_are_refused() {
    let snapshots = vec![
        snap("x", "2026-01-01T00:00:00Z"),
        snap("x", "2026-01-02T00:00:00Z"),
    ];
    let err = decide(
        &snapshots,
        &default_policy(),
        GroupBy::default(),
        &TimeZone::UTC,
    )
    .unwrap_err();
    assert_eq!(err, RetentionError::DuplicateSnapshotId { id: "x".into() });
}

#[test]
fn validate_refuses_a_policy_that_keeps_nothing() {
    let zeros = KeepPolicy {
        last: Some(0),
        hourly: Some(0),
        daily: Some(0),
        weekly: Some(0),
        monthly: Some(0),
        yearly: Some(0),
        within: Some("0d".parse().unwrap()),
        tags: vec![],
    };
    for policy in [KeepPolicy::default(), zeros] {
        let err = policy.validate().unwrap_err();
        assert_eq!(err, RetentionError::EmptyPolicy);
        assert!(err.to_string().contains("at least one --keep-* option"));
        let snapshots = [snap("s", "2026-01-01T00:00:00Z")];
        let refused = decide(&snapshots, &policy, GroupBy::default(), &TimeZone::UTC);
        assert_eq!(refused, Err(RetentionError::EmptyPolicy));
    }
    let only_tags = KeepPolicy {
        tags: vec!["prod".into()],
        ..KeepPolicy::default()
    };
    assert_eq!(only_tags.validate(), Ok(()));
    for empty in ["", "  "] {
        let tags = KeepPolicy {
            tags: vec!["prod".into(), empty.into()],
            ..KeepPolicy::default()
        };
        assert_eq!(tags.validate(), Err(RetentionError::EmptyTag));
    }
    assert_eq!(default_policy().validate(), Ok(()));
}

#[test]
fn default_policy_is_24_hourly_7_daily_4_weekly_12_monthly() {
    let expected = KeepPolicy {
        hourly: Some(24),
        daily: Some(7),
        weekly: Some(4),
        monthly: Some(12),
        ..KeepPolicy::default()
    };
    assert_eq!(default_policy(), expected);
}

#[test]
fn keep_within_parses_every_unit_and_prints_canonically() {
    let within: KeepWithin = "4h3d2m1y".parse().unwrap();
    assert_eq!(within.to_string(), "1y2m3d4h");
    let span = within.span();
    assert_eq!(
        (
            span.get_years(),
            span.get_months(),
            span.get_days(),
            span.get_hours()
        ),
        (1, 2, 3, 4)
    );
    assert_eq!("2w".parse::<KeepWithin>().unwrap().span().get_weeks(), 2);
    assert_eq!(within, KeepWithin::new(1, 2, 0, 3, 4).unwrap());
    assert!("0d".parse::<KeepWithin>().unwrap().is_zero());
    assert!(!"007h".parse::<KeepWithin>().unwrap().is_zero());
}

#[test]
fn keep_within_parse_errors_name_the_input_and_the_problem() {
    let cases = [
        ("", "it is empty"),
        ("12", "the number 12 has no unit"),
        ("d", "unit 'd' has no number before it"),
        ("3x", "unknown unit 'x' after 3"),
        ("3M", "unknown unit 'M' after 3"),
        ("1d2d", "unit 'd' appears more than once"),
        ("-1d", "unexpected character '-'"),
        ("1d ", "unexpected character ' '"),
        ("99999999999d", "the number 99999999999 is too large"),
        ("20000y", "the duration is too long"),
    ];
    for (input, problem) in cases {
        let err = input.parse::<KeepWithin>().unwrap_err();
        let RetentionError::InvalidWithin {
            input: named,
            reason,
        } = &err
        else {
            panic!("{input:?} gave {err:?}");
        };
        assert_eq!(named, input);
        assert!(reason.contains(problem), "{input:?}: {reason}");
        assert!(err.to_string().contains(&format!("{input:?}")), "{err}");
    }
    let too_long = KeepWithin::new(0, 0, 0, 0, u32::MAX).unwrap_err();
    assert!(
        too_long.to_string().contains("\"4294967295h\""),
        "{too_long}"
    );
}

#[test]
fn group_by_parses_lists_and_names_unknown_criteria() {
    let all: GroupBy = " tags, source ,host".parse().unwrap();
    assert_eq!(
        all,
        GroupBy {
            source: true,
            host: true,
            tags: true
        }
    );
    assert_eq!(all.to_string(), "source,host,tags");
    assert_eq!("".parse::<GroupBy>().unwrap(), GroupBy::NONE);
    assert_eq!(GroupBy::default().to_string(), "source");
    let err = "host,paths".parse::<GroupBy>().unwrap_err();
    assert_eq!(
        err,
        RetentionError::InvalidGroupBy {
            input: "host,paths".into(),
            item: "paths".into()
        }
    );
}

#[test]
fn policy_json_round_trips_with_cli_field_names() {
    let policy = KeepPolicy {
        last: Some(3),
        within: Some("1y2m".parse().unwrap()),
        tags: vec!["prod".into()],
        ..default_policy()
    };
    let json = serde_json::to_value(&policy).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "keep_last": 3,
            "keep_hourly": 24,
            "keep_daily": 7,
            "keep_weekly": 4,
            "keep_monthly": 12,
            "keep_within": "1y2m",
            "keep_tags": ["prod"],
        })
    );
    let back: KeepPolicy = serde_json::from_value(json).unwrap();
    assert_eq!(back, policy);

    let sparse: KeepPolicy = serde_json::from_str(r#"{"keep_daily": 2}"#).unwrap();
    assert_eq!(sparse.daily, Some(2));
    assert!(serde_json::from_str::<KeepPolicy>(r#"{"keep_dayly": 2}"#).is_err());
    let bad = serde_json::from_str::<KeepPolicy>(r#"{"keep_within": "2q"}"#).unwrap_err();
    assert!(bad.to_string().contains("\"2q\""), "{bad}");
}

#[test]
fn decisions_serialize_for_json_output() {
    let snapshots = [snap("s1", "2026-01-01T00:00:00Z")];
    let policy = KeepPolicy {
        last: Some(1),
        ..KeepPolicy::default()
    };
    let decisions = run(&snapshots, &policy, &TimeZone::UTC);
    let json = serde_json::to_value(&decisions).unwrap();
    assert_eq!(
        json,
        serde_json::json!([{
            "id": "s1",
            "group": {"source": "/data"},
            "keep": true,
            "reasons": ["last"],
        }])
    );
    let back: Vec<Decision> = serde_json::from_value(json).unwrap();
    assert_eq!(back, decisions);
}

// ---- properties ----

fn arb_snapshots() -> impl Strategy<Value = Vec<SnapshotInfo>> {
    let one = (0i64..120, 0i64..3, 0usize..3, 0usize..2, 0u8..8);
    prop::collection::vec(one, 0..40).prop_map(|items| {
        let base = ts("2026-03-20T00:00:00Z");
        let names = ["prod", "db", "dev"];
        items
            .into_iter()
            .enumerate()
            .map(|(i, (step, minute, source, host, tag_bits))| SnapshotInfo {
                id: format!("s{i:02}"),
                time: base
                    .checked_add(Span::new().hours(step * 53).minutes(minute * 20))
                    .unwrap(),
                tags: (0..3)
                    .filter(|bit| tag_bits & (1 << bit) != 0)
                    .map(|bit| names[bit].to_string())
                    .collect(),
                source: format!("/src{source}"),
                host: format!("host{host}"),
            })
            .collect()
    })
}

fn arb_policy() -> impl Strategy<Value = KeepPolicy> {
    let count = || prop::option::of(0u32..6);
    let within = prop::option::of((0u32..2, 0u32..3, 0u32..10, 0u32..30)).prop_map(|w| {
        w.map(|(months, weeks, days, hours)| {
            KeepWithin::new(0, months, weeks, days, hours).unwrap()
        })
    });
    let tags = prop::sample::subsequence(vec!["prod".to_string(), "dev".to_string()], 0..=2);
    (
        count(),
        count(),
        count(),
        count(),
        count(),
        count(),
        within,
        tags,
    )
        .prop_map(
            |(last, hourly, daily, weekly, monthly, yearly, within, tags)| KeepPolicy {
                last,
                hourly,
                daily,
                weekly,
                monthly,
                yearly,
                within,
                tags,
            },
        )
        .prop_filter("policy must keep something", |p| p.validate().is_ok())
}

fn arb_group_by() -> impl Strategy<Value = GroupBy> {
    (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(source, host, tags)| GroupBy {
        source,
        host,
        tags,
    })
}

fn arb_zone() -> impl Strategy<Value = TimeZone> {
    prop_oneof![
        Just(TimeZone::UTC),
        Just(berlin()),
        Just(new_york()),
        Just(TimeZone::fixed(jiff::tz::offset(5))),
    ]
}

/// Members of each group, newest first, computed independently of `decide`.
fn groups_newest_first(
    snapshots: &[SnapshotInfo],
    group_by: GroupBy,
) -> BTreeMap<GroupKey, Vec<SnapshotInfo>> {
    let mut groups: BTreeMap<GroupKey, Vec<SnapshotInfo>> = BTreeMap::new();
    for s in snapshots {
        groups.entry(group_by.key(s)).or_default().push(s.clone());
    }
    for members in groups.values_mut() {
        members.sort_by_key(|s| (std::cmp::Reverse(s.time), s.id.clone()));
    }
    groups
}

/// An independent bucket label for the calendar rule `rule`.
fn label(rule: &str, time: Timestamp, tz: &TimeZone) -> String {
    let zoned = time.to_zoned(tz.clone());
    match rule {
        "hourly" => zoned.strftime("%Y-%m-%d %H %:z").to_string(),
        "daily" => zoned.date().to_string(),
        "weekly" => {
            let week = zoned.date().iso_week_date();
            format!("{}-W{}", week.year(), week.week())
        }
        "monthly" => zoned.strftime("%Y-%m").to_string(),
        _ => zoned.year().to_string(),
    }
}

proptest! {
    #[test]
    fn prop_reasons_agree_with_keep_and_every_snapshot_is_decided_once(
        snapshots in arb_snapshots(),
        policy in arb_policy(),
        group_by in arb_group_by(),
        tz in arb_zone(),
    ) {
        let decisions = decide(&snapshots, &policy, group_by, &tz).unwrap();
        let mut decided: Vec<&str> = decisions.iter().map(|d| d.id.as_str()).collect();
        let mut given: Vec<&str> = snapshots.iter().map(|s| s.id.as_str()).collect();
        decided.sort_unstable();
        given.sort_unstable();
        prop_assert_eq!(decided, given);
        for d in &decisions {
            prop_assert_eq!(d.keep, !d.reasons.is_empty(), "{:?}", d);
            for reason in &d.reasons {
                let known = ["last", "hourly", "daily", "weekly", "monthly", "yearly", "within"]
                    .contains(&reason.as_str())
                    || reason.strip_prefix("tag:").is_some_and(|t| policy.tags.iter().any(|p| p == t));
                prop_assert!(known, "unexpected reason {:?}", reason);
            }
        }
    }

    #[test]
    fn prop_keep_last_keeps_exactly_the_newest_of_each_group(
        snapshots in arb_snapshots(),
        policy in arb_policy(),
        n in 1u32..8,
        group_by in arb_group_by(),
    ) {
        let policy = KeepPolicy { last: Some(n), ..policy };
        let decisions = decide(&snapshots, &policy, group_by, &TimeZone::UTC).unwrap();
        let mut expected: Vec<String> = Vec::new();
        for members in groups_newest_first(&snapshots, group_by).values() {
            expected.extend(members.iter().take(n as usize).map(|s| s.id.clone()));
        }
        let mut by_last: Vec<String> = decisions
            .iter()
            .filter(|d| d.reasons.iter().any(|r| r == "last"))
            .map(|d| d.id.clone())
            .collect();
        expected.sort();
        by_last.sort();
        prop_assert_eq!(by_last, expected);
    }

    #[test]
    fn prop_result_does_not_depend_on_input_order(
        (snapshots, shuffled) in arb_snapshots()
            .prop_flat_map(|s| (Just(s.clone()), Just(s).prop_shuffle())),
        policy in arb_policy(),
        group_by in arb_group_by(),
        tz in arb_zone(),
    ) {
        let first = decide(&snapshots, &policy, group_by, &tz).unwrap();
        let second = decide(&shuffled, &policy, group_by, &tz).unwrap();
        prop_assert_eq!(first, second);
    }

    #[test]
    fn prop_calendar_rules_keep_the_newest_of_the_first_n_buckets(
        snapshots in arb_snapshots(),
        policy in arb_policy(),
        group_by in arb_group_by(),
        tz in arb_zone(),
    ) {
        let decisions = decide(&snapshots, &policy, group_by, &tz).unwrap();
        let rules = [
            ("hourly", policy.hourly),
            ("daily", policy.daily),
            ("weekly", policy.weekly),
            ("monthly", policy.monthly),
            ("yearly", policy.yearly),
        ];
        for (rule, count) in rules {
            let mut expected: Vec<String> = Vec::new();
            for members in groups_newest_first(&snapshots, group_by).values() {
                let mut seen: Vec<String> = Vec::new();
                for s in members {
                    let bucket = label(rule, s.time, &tz);
                    if seen.len() < count.unwrap_or(0) as usize && !seen.contains(&bucket) {
                        seen.push(bucket);
                        expected.push(s.id.clone());
                    }
                }
            }
            let mut got: Vec<String> = decisions
                .iter()
                .filter(|d| d.reasons.iter().any(|r| r == rule))
                .map(|d| d.id.clone())
                .collect();
            expected.sort();
            got.sort();
            prop_assert_eq!(got, expected, "rule {}", rule);
        }
    }
}
