//! Step 2: the as-of join of one bucket, in memory, on all cores.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BinaryArray, RecordBatch, UInt32Array};
use arrow::compute::{concat_batches, take, take_record_batch};
use arrow::datatypes::{Int64Type, UInt64Type};
use indicatif::ProgressBar;

use super::layout::Layout;
use super::parallel::parallel;
use super::partition::Partitioned;
use super::plan::Plan;
use super::spill::Spill;
use crate::offline::OfflineError;
use crate::registry::ServingRule;

/// One source row, as sorted for the as-of search (24 bytes; created timestamps and scan order
/// are looked up only to break ties).
#[derive(Clone, Copy)]
struct Entry {
    hash: u64,
    ts: i64,
    row: u32,
}

fn internal(what: &str, e: impl std::fmt::Display) -> OfflineError {
    OfflineError::Other(format!("{what}: {e}"))
}

/// For each entity row `(key, t)`, the source row the online path would serve at `t`: the
/// greatest `(ts, created)` with `ts <= t` (first in scan order among equals), if `t - ts <= ttl`.
/// Returns source row indices (null where there is none).
pub(super) fn as_of(
    entity_keys: &BinaryArray,
    entity_ts: &[i64],
    source_keys: &BinaryArray,
    source_ts: &[i64],
    source_created: &[i64],
    source_seq: &[u64],
    rule: &ServingRule,
) -> UInt32Array {
    let hash = |k: &[u8]| xxhash_rust::xxh3::xxh3_64(k);
    let mut entries: Vec<Entry> = (0..source_keys.len())
        .map(|i| Entry {
            hash: hash(source_keys.value(i)),
            ts: source_ts[i],
            row: i as u32,
        })
        .collect();
    // By key hash, then ascending (ts, created) and, among equal (ts, created), descending scan
    // order, so that the last entry at or before `t` is the first row scanned. Keys are not
    // compared while sorting: rows of two keys with the same 64-bit hash interleave, and the
    // search below skips the other key's rows.
    entries.sort_unstable_by(|a, b| {
        a.hash.cmp(&b.hash).then(a.ts.cmp(&b.ts)).then_with(|| {
            let (a, b) = (a.row as usize, b.row as usize);
            source_created[a]
                .cmp(&source_created[b])
                .then(source_seq[b].cmp(&source_seq[a]))
        })
    });
    (0..entity_keys.len())
        .map(|i| {
            let key = entity_keys.value(i);
            let h = hash(key);
            let t = entity_ts[i];
            let p = entries.partition_point(|e| (e.hash, e.ts) <= (h, t));
            // The latest row of this key at or before `t`: the first one found walking back
            // through the rows of this hash.
            let e = entries[..p]
                .iter()
                .rev()
                .take_while(|e| e.hash == h)
                .find(|e| source_keys.value(e.row as usize) == key)?;
            // `e.ts <= t` holds; the serving rule bounds the age.
            rule.is_fresh(e.ts, t).then_some(e.row)
        })
        .collect()
}

fn join_bucket(
    plan: &Plan<'_>,
    group: usize,
    bucket: usize,
    partitioned: &Partitioned,
    results: &Spill,
    merge_rows: usize,
) -> Result<(), OfflineError> {
    let spill = &partitioned.entities[group];
    let batches = spill.take_all(bucket)?;
    if batches.is_empty() {
        // Still drain the views' buckets so their memory and files go.
        for &p in &plan.groups[group].views {
            partitioned.sources[p].take_all(bucket)?;
        }
        return Ok(());
    }
    let entities =
        concat_batches(spill.schema(), &batches).map_err(|e| internal("cannot join", e))?;
    drop(batches);
    // Results go out in input order.
    let order = arrow::compute::sort_to_indices(entities.column(0), None, None)
        .map_err(|e| internal("cannot sort entity rows", e))?;
    let entities = take_record_batch(&entities, &order).map_err(|e| internal("cannot join", e))?;
    let entity_keys = entities.column(1).as_binary::<i32>();
    let entity_ts = entities.column(2).as_primitive::<Int64Type>().values();

    let mut columns: Vec<ArrayRef> = vec![Arc::clone(entities.column(0))];
    for &p in &plan.groups[group].views {
        let vp = &plan.views[p];
        let spill = &partitioned.sources[p];
        let batches = spill.take_all(bucket)?;
        let source =
            concat_batches(spill.schema(), &batches).map_err(|e| internal("cannot join", e))?;
        drop(batches);
        let picks = as_of(
            entity_keys,
            entity_ts,
            source.column(0).as_binary::<i32>(),
            source.column(1).as_primitive::<Int64Type>().values(),
            source.column(2).as_primitive::<Int64Type>().values(),
            source.column(3).as_primitive::<UInt64Type>().values(),
            &vp.view.rule,
        );
        for c in 4..source.num_columns() {
            columns.push(
                take(source.column(c).as_ref(), &picks, None)
                    .map_err(|e| internal("cannot join", e))?,
            );
        }
    }
    let joined = RecordBatch::try_new(Arc::clone(&plan.result_schema(group)), columns)
        .map_err(|e| internal("cannot join", e))?;
    let mut offset = 0;
    while offset < joined.num_rows() {
        let len = merge_rows.min(joined.num_rows() - offset);
        results.write(bucket, joined.slice(offset, len))?;
        offset += len;
    }
    Ok(())
}

/// Joins every bucket of every key group; returns, per key group, the joined rows
/// `(row, features...)` of each bucket, ascending by row.
pub(super) fn join_all(
    plan: &Plan<'_>,
    layout: &Layout,
    partitioned: Partitioned,
    bar: &ProgressBar,
) -> Result<Vec<Spill>, OfflineError> {
    let dir = layout.spill_dir.as_ref().map(|d| d.path());
    let results: Vec<Spill> = (0..plan.groups.len())
        .map(|g| {
            Spill::new(
                plan.result_schema(g),
                layout.buckets,
                dir,
                &format!("joined-{g}"),
            )
        })
        .collect();
    let units = plan.groups.len() * layout.buckets;
    parallel(
        layout.threads,
        units,
        || (),
        |(), unit| {
            let (group, bucket) = (unit / layout.buckets, unit % layout.buckets);
            join_bucket(
                plan,
                group,
                bucket,
                &partitioned,
                &results[group],
                layout.merge_rows,
            )?;
            bar.inc(1);
            Ok(())
        },
        |()| Ok(()),
    )?;
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_of_keys_sharing_a_bucket_never_mix() {
        let keys = BinaryArray::from_vec(vec![b"a", b"b", b"a", b"b"]);
        let picks = as_of(
            &BinaryArray::from_vec(vec![b"a", b"b", b"c"]),
            &[10, 10, 10],
            &keys,
            &[1, 9, 5, 2],
            &[0, 0, 0, 0],
            &[0, 1, 2, 3],
            &ServingRule::new(None, 0, 0),
        );
        assert_eq!(
            picks.iter().collect::<Vec<_>>(),
            vec![Some(2), Some(1), None]
        );
    }
}
