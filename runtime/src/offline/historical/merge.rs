//! Step 3: merge the joined buckets of a key group back into input order (a k-way merge on the
//! row index; each bucket is already ascending).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::collections::binary_heap::PeekMut;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, RecordBatch, new_null_array};
use arrow::compute::interleave;
use arrow::datatypes::{Schema, SchemaRef, UInt64Type};

use super::spill::{Cursor, Spill};
use crate::offline::OfflineError;

struct Stream {
    cursor: Cursor,
    batch: RecordBatch,
    pos: usize,
    /// Slot of `batch` in the current `take`'s interleave sources, once used.
    slot: Option<usize>,
}

impl Stream {
    fn row(&self) -> u64 {
        self.batch
            .column(0)
            .as_primitive::<UInt64Type>()
            .value(self.pos)
    }
}

/// Yields a key group's joined feature columns for consecutive ranges of input rows; rows no
/// bucket holds (null keys or timestamps) get nulls.
pub(super) struct Merger {
    streams: Vec<Stream>,
    heap: BinaryHeap<Reverse<(u64, usize)>>,
    /// One all-null row.
    nulls: RecordBatch,
}

impl Merger {
    pub(super) fn new(spill: Spill, schema: SchemaRef) -> Result<Self, OfflineError> {
        let buckets = spill.buckets();
        let mut streams = Vec::new();
        let mut heap = BinaryHeap::new();
        for bucket in 0..buckets {
            let mut cursor = spill.cursor(bucket);
            if let Some(batch) = cursor.next_batch()? {
                let stream = Stream {
                    cursor,
                    batch,
                    pos: 0,
                    slot: None,
                };
                heap.push(Reverse((stream.row(), streams.len())));
                streams.push(stream);
            }
        }
        let nullable = Arc::new(Schema::new(
            schema
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
        ));
        let nulls = RecordBatch::try_new(
            nullable,
            schema
                .fields()
                .iter()
                .map(|f| new_null_array(f.data_type(), 1))
                .collect(),
        )
        .map_err(|e| OfflineError::Other(format!("cannot merge: {e}")))?;
        Ok(Merger {
            streams,
            heap,
            nulls,
        })
    }

    /// The feature columns (the joined columns after the row index) of rows `first..first+len`.
    pub(super) fn take(&mut self, first: u64, len: usize) -> Result<Vec<ArrayRef>, OfflineError> {
        let mut sources: Vec<RecordBatch> = vec![self.nulls.clone()];
        let mut picks = Vec::with_capacity(len);
        let mut used = Vec::new();
        for row in first..first + len as u64 {
            // The stream holding the next row stays at the top while it is advanced, and sifts
            // down once (not a pop and a push per row).
            let Some(mut top) = self.heap.peek_mut() else {
                picks.push((0, 0));
                continue;
            };
            let Reverse((next, s)) = *top;
            if next != row {
                debug_assert!(next > row, "joined rows are unique and ascending");
                picks.push((0, 0));
                continue;
            }
            let stream = &mut self.streams[s];
            let slot = match stream.slot {
                Some(slot) => slot,
                None => {
                    sources.push(stream.batch.clone());
                    used.push(s);
                    stream.slot = Some(sources.len() - 1);
                    sources.len() - 1
                }
            };
            picks.push((slot, stream.pos));
            stream.pos += 1;
            if stream.pos == stream.batch.num_rows() {
                match stream.cursor.next_batch()? {
                    Some(batch) => {
                        stream.batch = batch;
                        stream.pos = 0;
                        stream.slot = None;
                    }
                    None => {
                        stream.cursor.remove();
                        PeekMut::pop(top);
                        continue;
                    }
                }
            }
            *top = Reverse((stream.row(), s));
        }
        for s in used {
            self.streams[s].slot = None;
        }
        (1..self.nulls.num_columns())
            .map(|c| {
                let arrays: Vec<&dyn arrow::array::Array> =
                    sources.iter().map(|b| b.column(c).as_ref()).collect();
                interleave(&arrays, &picks)
                    .map_err(|e| OfflineError::Other(format!("cannot merge: {e}")))
            })
            .collect()
    }
}
