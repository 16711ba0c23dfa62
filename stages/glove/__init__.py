"""GloVe word vectors: download, the embedding matrix for the IMDB vocabulary, a t-SNE map."""
