"""MovieLens: model builders, the bias arithmetic, reading every variant, prepare, baselines and the analysis."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pandas as pd
import pytest

from stages.common.cli import StageError
from stages.common.params import ParamsError, validate_section
from stages.movielens import analyze, baselines, data, prepare
from stages.movielens.models import bias_model, dot_model, nn_model
from stages.movielens.params import AnalyzeParams, MovieLensParams
from tests.conftest import REPO
from tests.factories.movielens import movielens_zip, ratings_table


def unzip(blob: bytes, dest):
    zipfile.ZipFile(io.BytesIO(blob)).extractall(dest)
    return dest


def test_bias_model_computes_dot_plus_biases():
    model = bias_model(3, 4, factors=2, l2=0.0)
    u_emb = np.arange(6, dtype="float32").reshape(3, 2) / 10
    m_emb = np.arange(8, dtype="float32").reshape(4, 2) / 10
    u_bias, m_bias = np.array([[0.1], [0.2], [0.3]], "float32"), np.array([[1.0], [2.0], [3.0], [4.0]], "float32")
    for name, value in [
        ("user_embedding", u_emb),
        ("movie_embedding", m_emb),
        ("user_bias", u_bias),
        ("movie_bias", m_bias),
    ]:
        model.get_layer(name).set_weights([value])
    users, movies = np.array([0, 2, 1], "int32"), np.array([3, 0, 2], "int32")
    got = model.predict({"user": users, "movie": movies}, verbose=0)
    expected = (u_emb[users] * m_emb[movies]).sum(1) + u_bias[users, 0] + m_bias[movies, 0]
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_rating_range_squashes_into_range():
    model = dot_model(5, 5, factors=3, rating_range=(0.5, 5.0))
    for layer in ("user_embedding", "movie_embedding"):
        model.get_layer(layer).set_weights([np.full((5, 3), 10.0, "float32")])
    out = model.predict({"user": np.arange(5, dtype="int32"), "movie": np.arange(5, dtype="int32")}, verbose=0)
    assert np.all(out <= 5.0) and np.all(out > 4.9)


def test_nn_model_shapes_and_training_step():
    model = nn_model(10, 12, factors=4, hidden=8, rating_range=(0.0, 5.5))
    model.compile("adam", "mse")
    x = {"user": np.arange(10, dtype="int32"), "movie": np.arange(10, dtype="int32")}
    before = model.evaluate(x, np.full(10, 4.0), verbose=0)
    model.fit(x, np.full(10, 4.0), epochs=30, verbose=0)
    assert model.predict(x, verbose=0).shape == (10,)
    assert model.evaluate(x, np.full(10, 4.0), verbose=0) < before


@pytest.mark.parametrize("dataset", ["ml-latest-small", "ml-100k", "ml-1m", "ml-25m"])
def test_each_variant_is_read_in_its_own_format(tmp_path, dataset):
    rows = ratings_table(n_users=5, n_movies=8, per_user=4)
    raw = unzip(movielens_zip(rows, empty_titles=1, dataset=dataset), tmp_path)
    ratings = data.read_ratings(raw, dataset)
    movies = data.read_movies(raw, dataset)
    assert len(ratings) == len(rows)
    assert ratings["rating"].between(0.5, 5).all()
    assert movies["untitled"].sum() == 1
    assert movies.loc[movies["untitled"], "title"].iloc[0].startswith("movie ")


@pytest.mark.parametrize(
    "body, needle",
    [
        ("userId,movieId,rating,timestamp\n1,2,3.0,5\n1,3,abc,6\n", "line 3"),
        ("userId,movieId,rating,timestamp\n1,2,3.0,5\n2,3,7.5,6\n", "line 3"),
        ("userId,movieId,rating,timestamp\n1,2,0.0,5\n", "line 2"),
        ("userId,movieId,timestamp\n1,2,5\n", "missing column(s) rating"),
        ("userId,movieId,rating,timestamp\n1,x,3.0,5\n", "line 2"),
    ],
)
def test_malformed_ratings_name_file_and_line(tmp_path, body, needle):
    folder = tmp_path / "ml-latest-small"
    folder.mkdir()
    (folder / "ratings.csv").write_text(body)
    with pytest.raises(StageError) as err:
        data.read_ratings(tmp_path, "ml-latest-small")
    assert needle in str(err.value) and "ratings.csv" in str(err.value)


def test_prepare_gives_contiguous_ids_and_a_seeded_split(tmp_path):
    raw = unzip(movielens_zip(empty_titles=2), tmp_path)
    ratings, movies = data.read_ratings(raw, "ml-latest-small"), data.read_movies(raw, "ml-latest-small")
    encoded, users, table, stats = prepare.prepare(ratings, movies, 0.2, seed=7)
    assert sorted(encoded["user"].unique()) == list(range(stats["n_users"]))
    assert sorted(encoded["movie"].unique()) == list(range(stats["n_movies"]))
    assert 0.15 < encoded["valid"].mean() < 0.25
    again = prepare.prepare(ratings, movies, 0.2, seed=7)[0]
    other = prepare.prepare(ratings, movies, 0.2, seed=8)[0]
    assert encoded["valid"].equals(again["valid"]) and not encoded["valid"].equals(other["valid"])
    assert stats["untitled_movies"] == 2
    assert table["title"].str.len().gt(0).all()


def test_baselines_arithmetic():
    ratings = pd.DataFrame(
        {
            "movie": [0, 0, 1, 1, 0, 1, 2],
            "rating": [4.0, 2.0, 5.0, 5.0, 4.0, 3.0, 1.0],
            "valid": [False, False, False, False, True, True, True],
        }
    )
    result = baselines.baselines(ratings)
    global_mean = 4.0
    assert result["global_mean"]["val_mse"] == pytest.approx(((4 - 4) ** 2 + (3 - 4) ** 2 + (1 - 4) ** 2) / 3)
    # movie 2 has no training rating: the global mean stands in
    assert result["movie_mean"]["val_mse"] == pytest.approx(((4 - 3) ** 2 + (3 - 5) ** 2 + (1 - global_mean) ** 2) / 3)


def test_analysis_exports_biases_and_pca_with_untitled_movies_labelled():
    n_movies = 30
    model = bias_model(5, n_movies, factors=6, l2=0.0)
    rng = np.random.default_rng(0)
    model.get_layer("movie_embedding").set_weights([rng.normal(size=(n_movies, 6)).astype("float32")])
    model.get_layer("movie_bias").set_weights([np.arange(n_movies, dtype="float32")[:, None]])
    movies = pd.DataFrame(
        {
            "movie": np.arange(n_movies),
            "movieId": np.arange(n_movies) + 100,
            "title": [f"movie {i + 100}" if i < 2 else f"T{i}" for i in range(n_movies)],
            "n_ratings": np.arange(n_movies)[::-1] + 1,
        }
    )
    p = AnalyzeParams(model="bias", top_movies=20, n_extremes=3, pca_components=3, n_plotted=10)
    extremes, coords, ends, variance = analyze.analyze(model, movies, p)
    assert len(coords) == 20 and list(coords.columns[-3:]) == ["pc1", "pc2", "pc3"]
    assert coords["title"].iloc[0] == "movie 100"  # the most-rated, untitled, kept and labelled by id
    # biases are 0..29; the 20 most-rated are movies 0..19, so the lowest are 0,1,2 and the highest 19,18,17
    assert extremes[extremes["end"] == "lowest"]["movie"].tolist() == [0, 1, 2]
    assert extremes[extremes["end"] == "highest"]["movie"].tolist() == [19, 18, 17]
    assert set(ends) == {"pc1", "pc2", "pc3"} and len(ends["pc1"]["positive"]) == 3
    assert variance[0] >= variance[1] >= variance[2]
    fig = analyze.pc_scatter(coords, 10)
    assert "PC1 vs PC3" in fig.axes[0].get_title() and len(fig.axes[0].texts) == 10


def test_repo_params_match_the_schema():
    import yaml

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    validate_section("movielens", raw["movielens"], MovieLensParams)


@pytest.mark.parametrize(
    "path, value, expected",
    [
        ("models.bias.epochs", -1, "movielens.models.bias.epochs = -1: Input should be greater than or equal to 1"),
        ("models.bias.factors", "fifty", "movielens.models.bias.factors = 'fifty'"),
        ("prepare.valid_fraction", 1.5, "movielens.prepare.valid_fraction = 1.5: Input should be less than 1"),
        ("prepare.sede", 1, "movielens.prepare.sede = 1: unknown key; allowed keys here: seed, valid_fraction"),
        ("dataset", "ml-10m", "movielens.dataset = 'ml-10m'"),
        ("models.bias.sparse_updates", True, "sparse_updates needs l2: 0 (got 0.0001)"),
    ],
)
def test_bad_params_name_key_value_and_what_is_allowed(path, value, expected):
    import yaml

    from harness.project import set_nested

    raw = yaml.safe_load((REPO / "params.yaml").read_text())["movielens"]
    set_nested(raw, path, value)
    with pytest.raises(ParamsError) as err:
        validate_section("movielens", raw, MovieLensParams)
    assert expected in str(err.value)


def test_sparse_training_matches_its_settings_and_saves_a_model_keras_loads_as_plain_adam(tmp_path):
    import json
    import warnings

    import keras

    from stages.common.io import save_keras
    from stages.common.sparse_embeddings import LazyAdam
    from stages.movielens import params as movielens_params
    from stages.movielens import train

    raw = unzip(movielens_zip(), tmp_path)
    ratings, movies = data.read_ratings(raw, "ml-latest-small"), data.read_movies(raw, "ml-latest-small")
    encoded, users, table, _ = prepare.prepare(ratings, movies, 0.2, seed=0)
    mp = movielens_params.load().models["bias"]
    p = mp.model_copy(update={**movielens_params.LARGE_DATA_SETTINGS, "epochs": 2, "factors": 4})
    assert isinstance(train.optimizer(p, 0.01), LazyAdam) and not isinstance(train.optimizer(mp, 0.01), LazyAdam)
    model, history, _ = train.train(encoded, len(users), len(table), p)
    assert history["loss"][-1] < history["loss"][0]
    embedding = model.get_layer("user_embedding")  # trained with RowLookupEmbedding, returned in Keras' own layer
    assert type(embedding) is keras.layers.Embedding
    assert embedding.embeddings_regularizer is None and embedding.activity_regularizer is not None
    save_keras(tmp_path / "bias.keras", model)
    with zipfile.ZipFile(tmp_path / "bias.keras") as zf:
        config = json.loads(zf.read("config.json"))
    assert config["compile_config"]["optimizer"]["class_name"] == "Adam"
    assert config["compile_config"]["optimizer"]["module"] == "keras.optimizers"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. Keras' "Skipping variable loading for optimizer"
        loaded = keras.saving.load_model(tmp_path / "bias.keras")
    x = {"user": np.array([0, 1], "int32"), "movie": np.array([0, 1], "int32")}
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)


@pytest.mark.parametrize("layout", ["ml-100k", "ml-1m", "ml-25m"])
def test_the_scale_benchmarks_archives_read_as_their_release_does(tmp_path, layout):
    from benchmarks.movielens_scale import archive, synthetic_ratings

    generated = synthetic_ratings(n_users=50, n_movies=30, n_ratings=600, seed=1)
    assert not generated.duplicated(["userId", "movieId"]).any() and generated["rating"].between(0.5, 5).all()
    raw = unzip(archive(layout, generated, n_movies=30), tmp_path)
    ratings, movies = data.read_ratings(raw, layout), data.read_movies(raw, layout)
    assert len(ratings) == 600 and len(movies) == 30
    assert ratings[["userId", "movieId"]].to_numpy().tolist() == generated[["userId", "movieId"]].to_numpy().tolist()
    whole_stars = layout in ("ml-100k", "ml-1m")
    assert (
        (ratings["rating"] % 1 == 0).all()
        if whole_stars
        else ratings["rating"].equals(generated["rating"].astype("float32"))
    )
