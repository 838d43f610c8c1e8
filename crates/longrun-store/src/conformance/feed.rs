//! The change feed that watch streams resume from: positions, replay after
//! a position, and what a reader is told once the feed has moved on.

use std::time::{Duration, SystemTime};

use super::{name, new_op, policy, success, t0};
use crate::{CHANGE_RETENTION, Change, Store, Update};

/// Changes carry positions that never go back; the feed replays after any
/// of them in order, and a position it never had is refused.
pub(super) async fn changes_replay_after_any_position(store: &dyn Store) {
    let start = store.position().await.unwrap();
    let mut announced = store.changes();
    store.create(new_op(name("feed-replay", "a"))).await.unwrap();
    let progress = Update {
        progress_percent: Some(50),
        ..Update::default()
    };
    store.update(&name("feed-replay", "a"), progress, t0()).await.unwrap();
    store
        .complete(&name("feed-replay", "a"), success(), t0())
        .await
        .unwrap();
    store.delete(&name("feed-replay", "a")).await.unwrap();

    let mut seen: Vec<Change> = Vec::new();
    while seen.len() < 4 {
        let change = announced.recv().await.unwrap();
        if change.name == name("feed-replay", "a").to_string() {
            seen.push(change);
        }
    }
    let positions: Vec<u64> = seen.iter().map(|change| change.position).collect();
    assert!(positions.is_sorted(), "positions never go back: {positions:?}");
    assert!(positions[0] >= start, "{positions:?} from {start}");
    assert!(seen[2].done && !seen[2].deleted && seen[3].deleted, "{seen:?}");
    let now = store.position().await.unwrap();
    assert!(now >= positions[3], "the store stands at or past what it announced");

    // From before them all: the four, in order (with nothing else of ours).
    let replayed: Vec<Change> = store
        .changes_after(start, 1000)
        .await
        .unwrap()
        .expect("the feed still reaches back")
        .into_iter()
        .filter(|change| change.name == name("feed-replay", "a").to_string())
        .collect();
    let strip = |changes: &[Change]| -> Vec<(bool, bool)> {
        changes.iter().map(|change| (change.done, change.deleted)).collect()
    };
    assert_eq!(strip(&replayed), strip(&seen));
    // From the third one's position on: at most what followed it, and at
    // least the deletion.
    let after_third = store.changes_after(seen[2].position, 1000).await.unwrap().unwrap();
    assert!(
        after_third
            .iter()
            .any(|change| change.deleted && change.name == seen[3].name)
    );
    assert!(after_third.iter().all(|change| change.position > seen[2].position));
    // A limit is a limit.
    assert!(store.changes_after(start, 1).await.unwrap().unwrap().len() <= 1);
    // Nothing after now.
    assert_eq!(store.changes_after(now, 10).await.unwrap(), Some(Vec::new()));
    // A position this feed never reached.
    assert_eq!(store.changes_after(now + 1_000_000_000, 10).await.unwrap(), None);
}

/// Past the retention window the sweep prunes the feed, and a reader from
/// a pruned position is told (`None`) instead of missing changes.
pub(super) async fn the_feed_forgets_after_its_retention(store: &dyn Store) {
    let start = store.position().await.unwrap();
    store.create(new_op(name("feed-retention", "a"))).await.unwrap();
    let mut announced = store.changes();
    store.create(new_op(name("feed-retention", "b"))).await.unwrap();
    let last = loop {
        let change = announced.recv().await.unwrap();
        if change.name == name("feed-retention", "b").to_string() {
            break change.position;
        }
    };
    assert!(store.changes_after(start, 10).await.unwrap().is_some());
    // A sweep one retention window from now prunes what was written until
    // now, a batch at a time.
    tokio::time::sleep(Duration::from_millis(10)).await;
    let later = SystemTime::now() + CHANGE_RETENTION;
    let mut sweeps = 0;
    while store.changes_after(start, 10).await.unwrap().is_some() {
        sweeps += 1;
        assert!(sweeps <= 100, "the sweep never pruned the feed past {start}");
        store.sweep(later, policy()).await.unwrap();
    }
    let now = store.position().await.unwrap();
    assert!(now >= last, "pruning does not move the position back");
    assert_eq!(store.changes_after(now, 10).await.unwrap(), Some(Vec::new()));
}

/// The sweep prunes only what is past the window: a change newer than the
/// cutoff stays readable, with every change after it.
pub(super) async fn the_feed_keeps_what_is_inside_its_window(store: &dyn Store) {
    let mut announced = store.changes();
    store.create(new_op(name("feed-window", "old"))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let cutoff = SystemTime::now();
    tokio::time::sleep(Duration::from_millis(50)).await;
    store.create(new_op(name("feed-window", "new"))).await.unwrap();
    let (mut old, mut new) = (None, None);
    while old.is_none() || new.is_none() {
        let change = announced.recv().await.unwrap();
        if change.name == name("feed-window", "old").to_string() {
            old = Some(change.position);
        } else if change.name == name("feed-window", "new").to_string() {
            new = Some(change.position);
        }
    }
    let (old, new) = (old.unwrap(), new.unwrap());
    for _ in 0..3 {
        store.sweep(cutoff + CHANGE_RETENTION, policy()).await.unwrap();
    }
    assert_eq!(
        store.changes_after(old.saturating_sub(1), 10).await.unwrap(),
        None,
        "the change before the cutoff is pruned"
    );
    let kept = store
        .changes_after(old, 10)
        .await
        .unwrap()
        .expect("after the pruned change");
    assert!(
        kept.iter()
            .any(|change| change.position == new && change.name.ends_with("/new")),
        "the change after the cutoff is kept: {kept:?}"
    );
}
