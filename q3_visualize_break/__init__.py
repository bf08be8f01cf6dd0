"""Q3: visualise and break ConvNets with pycaffe, the engine behind the three notebooks.

    model = load_model("auto")                                  # loading.py: net + transformer + class names
    x = model.preprocess(image)                                 # tools/transform.py: RGB [0, 1] -> net input
    vis = class_model_visualization(model.net, c, bounds=model.bounds)   # class_model.py (Simonyan et al. 2014)
    sal = saliency_map(model.net, x, c)                         # saliency.py (Simonyan et al. 2014)
    fool = fooling_image(model.net, x, target, bounds=model.bounds)      # fooling.py (Szegedy et al. 2014)

The deploys (deploys.py) and model cards (model_card.py) are what load_model reads; the notebooks'
source is the jupytext percent script next to each .ipynb (run_notebooks.py executes them).

One calling convention runs through it (gradients.py): an objective maps the net's class scores and
image to (value, d value / d scores, d value / d image), objectives add and scale (class_score(c) -
1e-3 * l2()), and `input_gradient` pushes the score part back to the image. The three optimisation
loops (class visualisation, fooling, PGD) run the same per-step regularisers (regularisers.py). Images inside the
module are always net input arrays (C, H, W), BGR, mean subtracted; `model.deprocess` turns them back
into RGB pictures in [0, 1].
"""

