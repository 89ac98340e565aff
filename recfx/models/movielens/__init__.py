"""MovieLens-100k: data, a OneRec-style generative recommender, a DLRM-style ranker, training and evaluation."""

from recfx.models.movielens.checkpoint import load_checkpoint, save_checkpoint
from recfx.models.movielens.data import MovieLens, find_ml100k, load_movielens
from recfx.models.movielens.generative import GenerativeConfig, GenerativeRecommender
from recfx.models.movielens.ranking import RankingConfig, RankingModel
from recfx.models.movielens.train import TrainConfig, train_generative, train_ranking

__all__ = [
    "GenerativeConfig", "GenerativeRecommender", "MovieLens", "RankingConfig", "RankingModel", "TrainConfig",
    "find_ml100k", "load_checkpoint", "load_movielens", "save_checkpoint", "train_generative", "train_ranking",
]
