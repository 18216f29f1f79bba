document.getElementById('app').textContent = 'ts3ab-lb admin';
