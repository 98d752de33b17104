//! What each strategy kind knows of itself: its name, how many worker ranks and servers it runs
//! on threads, which ranks share a part of the data, the sub-groups a worker joins, and how to
//! build one worker's strategy. Every `match` over the kinds that starting a run needs is here.

use super::config::StrategyKind;
use super::data_parallel::{self, AllReduce};
use super::{hybrid, param_server, pipeline, tensor_parallel};
use crate::comm::{Algorithm, Communicator};
use crate::data::sampler::Shard;
use crate::net::Net;
use crate::train::{nonfinite::OnNonFinite, Strategy, TrainConfig, TrainError};

/// A worker's sub-groups: (the group it computes with, the same position in the other
/// replicas), for hybrid data × pipeline and the hybrid classifier split.
pub(crate) type Groups = Option<(Box<dyn Communicator>, Box<dyn Communicator>)>;

impl StrategyKind {
    /// The name in checkpoints and metrics (`--strategy`).
    pub fn name(&self) -> &'static str {
        match self {
            StrategyKind::AllReduce(_) => "allreduce",
            StrategyKind::ParamServer(_) => "ps",
            StrategyKind::Pipeline(_) => "pipeline",
            StrategyKind::Tensor(_) => "tensor",
            StrategyKind::Hybrid(_) => "hybrid",
        }
    }

    /// Worker ranks of a run on threads (`--workers` for the data-parallel kinds; the model
    /// split's own layout otherwise).
    pub fn workers_on_threads(&self, workers: usize) -> usize {
        match self {
            StrategyKind::Pipeline(p) => p.stages * p.replicas,
            StrategyKind::Tensor(t) => t.mp,
            StrategyKind::Hybrid(h) => h.dp * h.mp,
            StrategyKind::AllReduce(_) | StrategyKind::ParamServer(_) => workers,
        }
    }

    /// Server ranks after the workers, and the algorithm of the threads' collectives.
    pub fn servers_and_algorithm(&self) -> (usize, Algorithm) {
        match self {
            StrategyKind::AllReduce(a) => (0, a.effective_algorithm()),
            StrategyKind::ParamServer(p) => (p.servers, Algorithm::Ring),
            StrategyKind::Pipeline(_) | StrategyKind::Tensor(_) | StrategyKind::Hybrid(_) => (0, Algorithm::Direct),
        }
    }

    /// Consecutive worker ranks that load the same data (`--data-split` parts): the stages of
    /// one pipeline replica, all slices of a tensor split, else each rank alone.
    pub fn data_group(&self, workers: usize) -> usize {
        match self {
            StrategyKind::Pipeline(p) => p.stages.max(1),
            StrategyKind::Tensor(_) => workers.max(1),
            _ => 1,
        }
    }

    /// The sub-groups worker `rank` joins (collective over `comm`: every worker calls it).
    pub(crate) fn split_groups(&self, comm: &dyn Communicator, rank: usize) -> Result<Groups, TrainError> {
        Ok(match self {
            // Hybrid data × pipeline: the stages of one replica, and one stage of all replicas.
            StrategyKind::Pipeline(p) if p.replicas > 1 => {
                Some((comm.split(rank / p.stages, rank % p.stages)?, comm.split(rank % p.stages, rank / p.stages)?))
            }
            // The classifier group of this worker, and the workers holding its slice.
            StrategyKind::Hybrid(h) => {
                Some((comm.split(rank / h.mp, rank % h.mp)?, comm.split(rank % h.mp, rank / h.mp)?))
            }
            _ => None,
        })
    }

    /// Worker `rank`'s strategy (of `workers`) and the part of every global batch it loads.
    pub(crate) fn build<'c>(
        &self,
        comm: &'c dyn Communicator,
        groups: &'c Groups,
        rank: usize,
        workers: usize,
        cfg: &TrainConfig,
        net: &Net,
    ) -> Result<(Box<dyn Strategy + 'c>, Shard), TrainError> {
        Ok(match self {
            StrategyKind::AllReduce(a) => {
                let leaves = if a.deterministic { data_parallel::DETERMINISTIC_LEAVES } else { workers };
                (Box::new(AllReduce::new(comm, a.clone(), cfg, net)?), Shard { rank, world: workers, leaves, group: 1 })
            }
            StrategyKind::ParamServer(p) => {
                let (len, ranges) = (net.layout().len(), net.layout().buffer_ranges());
                let client = param_server::Client::new(comm, workers, p, len, &cfg.optimizer, ranges)?
                    .skip_nonfinite(cfg.on_nonfinite == OnNonFinite::Skip);
                (Box::new(client), Shard::of(rank, workers))
            }
            // Every stage sees the whole batch (stage 0 its images, the last its labels).
            StrategyKind::Pipeline(p) => {
                let (stages, replicas) = match groups {
                    Some((s, r)) => (&**s, Some(&**r)),
                    None => (comm, None),
                };
                (
                    Box::new(pipeline::Pipeline::new(stages, replicas, p.clone(), cfg, net)?),
                    Shard::grouped(rank, workers, p.stages),
                )
            }
            // Every slice computes on the whole batch.
            StrategyKind::Tensor(_) => {
                (Box::new(tensor_parallel::TensorSplit::new(comm, cfg, net)?), Shard::grouped(rank, workers, workers))
            }
            StrategyKind::Hybrid(h) => {
                let (group, replicas) =
                    groups.as_ref().map(|(g, r)| (&**g, &**r)).expect("hybrid groups are split before");
                (Box::new(hybrid::Hybrid::new(comm, group, replicas, h.clone(), cfg, net)?), Shard::of(rank, workers))
            }
        })
    }
}
