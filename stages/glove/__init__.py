"""GloVe word vectors: download and a t-SNE map (IMDB builds its embedding matrix from them: imdb_glove_matrix)."""
