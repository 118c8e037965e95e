from django.urls import path

from experiments.live import views

app_name = "experiments"

urlpatterns = [
    path("<int:run_id>/samples.json", views.run_samples, name="run_samples"),
]
