//! The plan of a run: the feature views to join (grouped by join keys), the on-demand views to
//! compute, and where every output column and transform input comes from.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::FeatureList;
use crate::offline::OfflineError;
use crate::offline::columns::arrow_type;
use crate::offline::source::{FileScan, PruneStats, TimeWindow, prune, source_files};
use crate::registry::{
    FeatureRef, FeatureView, JoinKey, OnDemandInputSource, OnDemandView, Registry,
};
use crate::storage::DataFile;
use crate::transform::LoadedModule;
use crate::types::ValueType;

/// One feature view to join.
pub(super) struct ViewPlan<'r> {
    pub(super) view: &'r FeatureView,
    /// Key group index.
    pub(super) group: usize,
    /// Indices of the fields to read, ascending.
    pub(super) fields: Vec<usize>,
    /// Its source's Parquet files.
    pub(super) files: Vec<DataFile>,
    /// What of them the run reads ([`Plan::prune`]); every row group until pruned.
    pub(super) scans: Vec<FileScan>,
}

/// Views sharing one join-key list share entity keys and buckets.
pub(super) struct GroupPlan {
    pub(super) join_keys: Vec<JoinKey>,
    /// Indices into `Plan::views`.
    pub(super) views: Vec<usize>,
}

/// Where an output column comes from.
#[derive(Clone, Copy)]
pub(super) enum OutputSource {
    /// A key group's joined results, at a column position (after the row index).
    Joined { group: usize, column: usize },
    /// An on-demand view's output field.
    OnDemand { plan: usize, field: usize },
}

/// One output feature column.
pub(super) struct OutputColumn {
    pub(super) name: String,
    pub(super) dtype: ValueType,
    pub(super) source: OutputSource,
}

/// One input of a transform: a joined feature or an entity dataframe column.
pub(super) struct TransformInput {
    pub(super) name: String,
    pub(super) dtype: ValueType,
    pub(super) source: InputSource,
}

/// Where a transform input comes from.
#[derive(Clone, Copy)]
pub(super) enum InputSource {
    /// A key group's joined results, at a column position (after the row index).
    Joined { group: usize, column: usize },
    /// A request field, from the entity dataframe column of the same name (located when the
    /// entity file is opened: [`EntityFile::requests`](super::entities::EntityFile::requests)).
    Request,
}

/// One on-demand view to compute.
pub(super) struct OnDemandPlan<'r> {
    pub(super) view: &'r OnDemandView,
    /// Its source views' features (by plain name), then its request fields.
    pub(super) inputs: Vec<TransformInput>,
    /// Its transform module, once loaded.
    pub(super) module: Option<Arc<LoadedModule>>,
}

/// Everything a run joins, computes and writes, resolved against the registry.
pub(super) struct Plan<'r> {
    /// The requested features as `view:feature`, in output order.
    pub(super) specs: Vec<String>,
    /// The feature views to join, in order of first use.
    pub(super) views: Vec<ViewPlan<'r>>,
    /// The views grouped by join-key list; each group is partitioned and joined on its own.
    pub(super) groups: Vec<GroupPlan>,
    /// The feature columns, in output order.
    pub(super) outputs: Vec<OutputColumn>,
    /// The on-demand views to compute, in order of first use.
    pub(super) on_demand: Vec<OnDemandPlan<'r>>,
}

impl<'r> Plan<'r> {
    /// Resolves the requested features and plans the views, key groups and columns they need.
    pub(super) fn new(
        registry: &'r Registry,
        list: &FeatureList,
        full_names: bool,
    ) -> Result<Self, OfflineError> {
        let refs: Vec<FeatureRef> = match list {
            FeatureList::Service(name) => registry
                .service(name)
                .ok_or_else(|| OfflineError::Other(format!("unknown feature service \"{name}\"")))?
                .features
                .clone(),
            FeatureList::Features(specs) => {
                if specs.is_empty() {
                    return Err(OfflineError::Other("no features requested".into()));
                }
                let mut refs = Vec::new();
                for s in specs {
                    refs.extend(registry.resolve_refs(s).map_err(OfflineError::Other)?);
                }
                refs
            }
        };
        let mut plan = Plan {
            specs: Vec::new(),
            views: Vec::new(),
            groups: Vec::new(),
            outputs: Vec::new(),
            on_demand: Vec::new(),
        };
        let mut by_view: HashMap<usize, usize> = HashMap::new();
        let mut by_odfv: HashMap<usize, usize> = HashMap::new();
        // Per reference: (planned view, field) or (on-demand plan, field).
        let mut wanted: Vec<OutputSource> = Vec::new();
        for r in &refs {
            let (view_name, field) = registry.ref_names(*r);
            plan.specs.push(format!("{view_name}:{}", field.name));
            match *r {
                FeatureRef::View { view, field } => {
                    let p = plan.view_plan(registry, &mut by_view, view)?;
                    if !plan.views[p].fields.contains(&field) {
                        plan.views[p].fields.push(field);
                    }
                    wanted.push(OutputSource::Joined {
                        group: p,
                        column: field,
                    });
                }
                FeatureRef::OnDemand { view, field } => {
                    let odfv = &registry.on_demand_views[view];
                    let o = match by_odfv.get(&view) {
                        Some(&o) => o,
                        None => {
                            // A transform sees every feature of its source views.
                            for &s in &odfv.sources {
                                let p = plan.view_plan(registry, &mut by_view, s)?;
                                plan.views[p].fields =
                                    (0..registry.feature_views[s].fields.len()).collect();
                            }
                            plan.on_demand.push(OnDemandPlan {
                                view: odfv,
                                inputs: Vec::new(),
                                module: None,
                            });
                            by_odfv.insert(view, plan.on_demand.len() - 1);
                            plan.on_demand.len() - 1
                        }
                    };
                    wanted.push(OutputSource::OnDemand { plan: o, field });
                }
            }
        }
        for v in &mut plan.views {
            v.fields.sort_unstable();
            v.fields.dedup();
        }
        for (r, w) in refs.iter().zip(wanted) {
            let (view_name, f) = registry.ref_names(*r);
            let source = match w {
                // `group` holds the planned view until here.
                OutputSource::Joined {
                    group: p,
                    column: field,
                } => {
                    let (group, column) = plan.joined_column(p, field);
                    OutputSource::Joined { group, column }
                }
                on_demand => on_demand,
            };
            plan.outputs.push(OutputColumn {
                name: if full_names {
                    format!("{view_name}__{}", f.name)
                } else {
                    f.name.to_string()
                },
                dtype: f.dtype,
                source,
            });
        }
        for o in 0..plan.on_demand.len() {
            let odfv = plan.on_demand[o].view;
            // The registry's layout, shared with serving: where each input is in the join.
            let inputs = odfv
                .inputs
                .iter()
                .map(|input| TransformInput {
                    name: input.name.to_string(),
                    dtype: input.dtype,
                    source: match input.source {
                        OnDemandInputSource::Feature { view, field } => {
                            let (group, column) = plan.joined_column(by_view[&view], field);
                            InputSource::Joined { group, column }
                        }
                        OnDemandInputSource::Request { .. } => InputSource::Request,
                    },
                })
                .collect();
            plan.on_demand[o].inputs = inputs;
        }
        Ok(plan)
    }

    /// The planned view for registry view `view`, planning it (and its key group) if needed.
    fn view_plan(
        &mut self,
        registry: &'r Registry,
        by_view: &mut HashMap<usize, usize>,
        view: usize,
    ) -> Result<usize, OfflineError> {
        if let Some(&p) = by_view.get(&view) {
            return Ok(p);
        }
        let v = &registry.feature_views[view];
        let group = match self.groups.iter().position(|g| g.join_keys == v.join_keys) {
            Some(g) => g,
            None => {
                self.groups.push(GroupPlan {
                    join_keys: v.join_keys.clone(),
                    views: Vec::new(),
                });
                self.groups.len() - 1
            }
        };
        self.groups[group].views.push(self.views.len());
        self.views.push(ViewPlan {
            view: v,
            group,
            fields: Vec::new(),
            files: source_files(&v.source)?,
            scans: Vec::new(),
        });
        by_view.insert(view, self.views.len() - 1);
        Ok(self.views.len() - 1)
    }

    /// Chooses what each view reads: the files and row groups that can hold rows usable at some
    /// entity time in `entity_times` (every row group when it is unknown).
    pub(super) fn prune(
        &mut self,
        entity_times: Option<(i64, i64)>,
    ) -> Result<PruneStats, OfflineError> {
        let mut stats = PruneStats::default();
        for vp in &mut self.views {
            let window = match entity_times {
                Some((first, last)) => {
                    let (start, end) = vp.view.rule.usable_window(first, last);
                    TimeWindow { start, end }
                }
                None => TimeWindow::default(),
            };
            let (scans, s) = prune(vp.view, &vp.files, window)?;
            vp.scans = scans;
            stats += s;
        }
        Ok(stats)
    }

    /// Where field `field` of planned view `p` lands: its key group and column in the group's
    /// joined results.
    pub(super) fn joined_column(&self, p: usize, field: usize) -> (usize, usize) {
        let vp = &self.views[p];
        let mut column = 0;
        for &q in &self.groups[vp.group].views {
            if q == p {
                column += vp.fields.iter().position(|&x| x == field).expect("planned");
                break;
            }
            column += self.views[q].fields.len();
        }
        (vp.group, column)
    }

    /// The Arrow schema of a key group's joined results: row index, then its views' fields.
    pub(super) fn result_schema(&self, group: usize) -> SchemaRef {
        let mut fields = vec![Field::new("row", DataType::UInt64, false)];
        for &p in &self.groups[group].views {
            let v = &self.views[p];
            for &f in &v.fields {
                let field = &v.view.fields[f];
                fields.push(Field::new(
                    format!("{}__{}", v.view.name, field.name),
                    arrow_type(field.dtype),
                    true,
                ));
            }
        }
        Arc::new(Schema::new(fields))
    }

    /// Fails when two feature columns share a name (possible only without full feature names).
    pub(super) fn check_unique_names(&self) -> Result<(), OfflineError> {
        for (i, out) in self.outputs.iter().enumerate() {
            if self.outputs[..i].iter().any(|o| o.name == out.name) {
                return Err(OfflineError::Other(format!(
                    "feature name \"{}\" appears twice; use full feature names",
                    out.name
                )));
            }
        }
        Ok(())
    }
}
