"""The networks (Keras 3): the paper's Arch1 and Arch2, the noise-aware production network, target scaling, loaded estimator folders."""
